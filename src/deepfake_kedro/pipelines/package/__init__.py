"""The package pipeline: a finished experiment as a usable detector (``model_package``)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
