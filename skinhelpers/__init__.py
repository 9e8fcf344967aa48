"""skinhelpers: the library behind the skinlesion-lab notebooks.

The data flows one way, stage by stage, and the subpackages follow it (a stage imports
from earlier stages and the top-level helpers only)::

    raw images + metadata (read, never written)
      data/      registry -> manifest (one table: image_id, path, label, group, metadata)
                 -> folder_options (a folder dataset's positive class, metadata CSV)
                 -> validate -> imaging (decode, preprocess) -> cache (uint8 memmap);
                 download (Kaggle), synthetic (the offline SYNTHETIC ``demo`` set)
      explore/   eda, quality, leakage                        -> notebooks 01-03
      split/     near_duplicates -> grouped (stratified, lesion-grouped splits) -> checks
                 (leaks) -> store (split.csv, split.json, folds) -> notebook 04
      model/     specs -> weights (hub / package / file) -> factory, checkpoints, inference
                 (the one input function and prediction loop), metrics (the one metrics
                 function)
      train/     augment, batch_augment -> config -> losses, sampling -> trainer ->
                 experiment, trials; distributed + launch (torchrun); plots -> notebooks 05-07
      evaluate/  scores, bootstrap (CIs), thresholds (operating points), calibration, tta,
                 explain (Grad-CAM), summary, subgroups, external, compare, predict,
                 onnx_model -> notebooks 08-09
      run/       pipeline (papermill, run_all.sh), execute, provenance, profiles, folders,
                 report
      share/     export (ONNX, safetensors), card_results -> model_card, demo (Gradio),
                 licences

    top level, used by every stage: files (atomic JSON/CSV, PROJECT_ROOT), device,
    progress, figures

``python -m skinhelpers --help`` lists the command-line tools.
"""

__version__ = "0.1.0"

from skinhelpers.logs import install as _install_logging  # noqa: E402

_install_logging()  # the library's messages to stdout, as before (skinhelpers.logs)
