"""Training: stages (freezing, per-block learning rates, one compile per stage) and runs."""
