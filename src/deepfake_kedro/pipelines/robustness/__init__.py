"""The robustness pipeline: final models' out-of-fold AUC under JPEG, blur, downscaling and noise."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
