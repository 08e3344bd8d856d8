"""Losses: plain PyTorch modules, importable without Hydra.

    from softloss_cli.losses import LOSSES, CrossEntropyLoss
    loss = LOSSES.get("ce")(label_smoothing=0.1)

Each family lives in its own module and registers its classes in ``LOSSES``.
"""

from softloss_cli.losses.base import LOSSES, PENALTIES, ClassificationLoss, SoftmaxLoss
from softloss_cli.losses.classification import CrossEntropyLoss
from softloss_cli.registry import import_families

__all__ = ["LOSSES", "PENALTIES", "ClassificationLoss", "SoftmaxLoss", "CrossEntropyLoss"]

# Family modules register their losses on import; their public names are re-exported here.
import_families("softloss_cli.losses", ("confidence", "ordinal", "ordinal_heads", "unimodal", "kappa", "negative", "multilabel",
                                    "average_k"), globals())
