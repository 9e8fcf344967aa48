"""Stage 1, data: raw images + metadata (never written) -> registry -> manifest -> validation
-> decoding and preprocessing -> the uint8 image cache (and the offline SYNTHETIC demo set).
"""
