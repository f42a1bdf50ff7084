"""The reporting pipeline: model_comparison.csv, detailed_results.json, model_benchmark.csv, report.pdf."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
