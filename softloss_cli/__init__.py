"""softloss: an experiment runner for classification losses that shape a softmax.

The losses (``softloss_cli.losses``) and metrics (``softloss_cli.metrics``) are plain
PyTorch and need neither Hydra nor the runner.
"""

__version__ = "0.1.0"
