"""Image index, integrity report, fold table and preprocessed image caches."""

from .pipeline import audit_pipeline, cache_pipeline, create_pipeline

__all__ = ["audit_pipeline", "cache_pipeline", "create_pipeline"]
