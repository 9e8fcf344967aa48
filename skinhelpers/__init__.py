"""skinhelpers: the library behind the skinlesion-lab notebooks.

The data flows one way, stage by stage, and the subpackages follow it (a stage imports
from earlier stages and the top-level helpers only)::

    raw images + metadata (read, never written)
      data/      registry -> manifest (one table: image_id, path, label, group, metadata)
                 -> validate -> imaging (decode, preprocess) -> cache (uint8 memmap);
                 download (Kaggle), synthetic (the offline SYNTHETIC ``demo`` set)
      explore/   eda, quality, leakage                        -> notebooks 01-03
      split/     grouped: stratified, lesion-grouped splits   -> notebook 04
      model/     factory (hub / package / file weights), checkpoints, metrics
      train/     augment -> config -> losses, sampling -> trainer -> experiment,
                 trials; distributed + launch (torchrun); plots -> notebooks 05-07
      evaluate/  scores (CIs, operating points), tta, explain (Grad-CAM),
                 predict (new images)                         -> notebook 08
      run/       pipeline (papermill, run_all.sh), profiles, folders, report

    top level, used by every stage: files (atomic JSON/CSV, PROJECT_ROOT), device,
    progress, figures

``python -m skinhelpers --help`` lists the command-line tools.
"""

__version__ = "0.1.0"
