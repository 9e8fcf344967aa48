"""Stage 4, the model: the factory (weights from the hub, a package or a file), checkpoints,
and the metrics every later stage scores it with.
"""
