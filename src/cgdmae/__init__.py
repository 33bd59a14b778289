"""CGD-MAE: MAE pre-training with CLIP distillation for vehicle re-identification."""

__version__ = "0.1.0"
