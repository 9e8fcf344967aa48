"""Stage 8, sharing: hand a trained model on without this suite.

ONNX / safetensors export with a config.json, a model card per run, a local Gradio demo.
"""
