"""The training loop and the small modules it calls (precision, checkpoints, logging, evaluation)."""
