"""The training engine that pre-training methods and fine-tuning tasks share: the loop, its
checkpoints and the distributed setup."""
