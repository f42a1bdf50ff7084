"""Image index, integrity report, fold table and preprocessed image caches."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
