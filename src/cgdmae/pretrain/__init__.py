"""Pre-training: methods behind a registry, the CLIP teacher and the training engine."""
