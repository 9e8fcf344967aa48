"""skinhelpers: the library behind the skinlesion-lab notebooks.

The data flows one way, and the modules follow it::

    datasets   -> manifest (one table: image_id, path, label, group, metadata)
    download   -> Kaggle download, or a clear error saying how to use a local copy
    synthetic  -> the offline ``demo`` dataset (HAM10000 layout, SYNTHETIC)
    validate   -> validation report (missing, corrupt, odd modes, duplicates, conflicts)
    imaging    -> decode + resize (+ optional preprocessing)
    cache      -> uint8 memmap image cache and a torch Dataset over it
    eda, quality, leakage          -> chapters 01-03
    splits, augment                -> chapters 04-05 (grouped splits, augmentation presets)
    models, checkpoints            -> the model factory, inference-ready checkpoints
    trainconfig, losses, sampling, train, ddp, experiment, trainplots -> chapters 06-07
    evaluate, tta, explain, predict -> chapter 08 and inference on new images
    runs, progress, plots, profiles, pipeline, report -> run folders, run_all.sh, the report
"""

__version__ = "0.1.0"
