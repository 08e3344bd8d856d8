"""name -> model class (for `softloss list`; configs instantiate classes by ``_target_``)."""

from softloss_cli.registry import Registry

MODELS = Registry("model")
