"""Stage 4, the model: the factory (its named networks in specs, their pretrained weights
from the hub, a package or a file in weights), checkpoints, the one input function and
prediction loop, and the metrics every later stage scores with.
"""
