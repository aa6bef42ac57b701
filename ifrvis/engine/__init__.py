"""Training runs: the trainer, its optimiser and schedule, checkpoints, distributed set-up."""
