"""Source attribution: a flat multi-class model against a real/fake -> family -> source hierarchy."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
