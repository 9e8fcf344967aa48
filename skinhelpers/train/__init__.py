"""Stage 5, training (notebooks 05-07): augmentation, config, losses, sampling, the trainer
(its loop, phases, validation and bookkeeping), the run-folder wiring, model trials, and the
distributed launch kept apart from the trainer.
"""
