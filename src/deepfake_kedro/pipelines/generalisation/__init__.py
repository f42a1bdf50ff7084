"""The generalisation pipeline: train on one fake source, test on each (the S × S transfer matrix)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
