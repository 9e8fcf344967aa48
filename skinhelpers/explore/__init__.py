"""Stage 2, exploration (notebooks 01-03): class balance and metadata, image quality, and
leakage (exact and near duplicates, label conflicts, metadata shortcuts).
"""
