"""mlgate: tracked training, gated promotion and inference for tabular scikit-learn models."""

__version__ = "0.1.0"
