"""Pre-training: the methods behind a registry, their views and data, and the run that wires
them to the training engine (cgdmae.training) and the teacher (cgdmae.teacher)."""
