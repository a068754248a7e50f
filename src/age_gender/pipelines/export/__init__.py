"""Export every trained model to SavedModel, TensorFlow Lite (float32, int8) and ONNX, and check
each export against its ``.keras`` model on the test split."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
