"""deepfake-kedro: a reproducible deepfake-detection study as a Kedro project."""

__version__ = "0.1.0"
