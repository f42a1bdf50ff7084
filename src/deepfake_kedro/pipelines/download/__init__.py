"""Fetching the raw data: DeepFakeFace's four zips from the Hugging Face Hub, extracted into data.root."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
