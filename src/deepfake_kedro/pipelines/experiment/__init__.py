"""The one experiment template that every phase instantiates under a namespace."""

from .pipeline import experiment_pipeline, final_model_pipeline

__all__ = ["experiment_pipeline", "final_model_pipeline"]
