"""Phase pipelines: namespaced experiments plus the phase's comparison node."""

from .pipeline import phase_pipeline

__all__ = ["phase_pipeline"]
