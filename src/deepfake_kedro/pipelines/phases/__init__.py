"""Phase pipelines: namespaced experiments plus the phase's comparison node."""

from .pipeline import final_models_pipeline, phase_pipeline

__all__ = ["final_models_pipeline", "phase_pipeline"]
