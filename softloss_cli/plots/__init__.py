"""Figure functions per family (``classification``, ``ordinal``, ``average_k``...).

Each module registers its figures with ``softloss_cli.plots.registry.figure`` and imports
matplotlib inside the functions only. ``task_figures`` imports them all on first use.
"""

FAMILIES = ("classification", "ordinal", "confidence", "multilabel", "average_k")
