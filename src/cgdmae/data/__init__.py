"""Datasets: the synthetic world, readers of the real on-disk formats, torch Datasets."""
