"""Stage 4, the model: the factory (weights from the hub, a package or a file), checkpoints,
the one input function and prediction loop, and the metrics every later stage scores with.
"""
