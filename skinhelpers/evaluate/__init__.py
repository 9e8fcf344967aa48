"""Stage 6, evaluation (notebooks 08-09 and new images): scores with CIs, operating points,
calibration, TTA, Grad-CAM, subgroups, external datasets, run comparison, prediction.
"""
