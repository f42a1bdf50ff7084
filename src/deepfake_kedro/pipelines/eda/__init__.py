"""The data audit: counts, size / quality / colour distributions, samples, data quality, shortcut audit."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
