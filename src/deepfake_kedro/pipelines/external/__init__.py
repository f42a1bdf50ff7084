"""The external pipeline: final models scored on labelled image trees the study never saw (cross-dataset)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
