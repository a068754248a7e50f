"""Architecture search for the CNN from scratch: the study's Table 2 grid, one node a candidate."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
