"""The predict pipeline: a model package scores new images, folders and videos (``predict.input``)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
