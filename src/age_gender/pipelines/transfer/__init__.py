"""Transfer learning: cached backbone features, backbone comparison, head search, Hyperband,
fine-tuning, and the final model tested on the held-out split."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
