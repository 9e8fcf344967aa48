"""Stage 5, training (notebooks 05-07): augmentation, config, losses, sampling, the trainer,
the run-folder wiring, model trials, and the distributed launch kept apart from the trainer.
"""
