"""Stage 3, splitting (notebook 04): stratified, lesion-grouped train/val/test split files
(and folds), merged over near-duplicates and checked for leaks.
"""
