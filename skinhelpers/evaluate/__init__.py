"""Stage 6, evaluation (notebook 08 and new images): scores with CIs, operating points,
calibration, TTA, Grad-CAM, and prediction on new images.
"""
