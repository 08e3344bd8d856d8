"""The shipped config tree as a catalog: which choices each group has, and what each one is.

Reads YAML files only (no Hydra, no torch), so the CLI can check a choice like
``loss=nope`` and answer in well under a second.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
GROUPS = ("data", "model", "loss", "optim", "sched", "trainer", "experiment", "hparams_search")


def choices(group: str) -> list[str]:
    """Names of the YAML files in ``configs/<group>/`` (what ``group=<name>`` accepts)."""
    folder = CONFIG_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_")) if folder.is_dir() else []


def describe(group: str, name: str) -> str:
    """The first comment line of ``configs/<group>/<name>.yaml`` (its one-line description)."""
    for line in (CONFIG_DIR / group / f"{name}.yaml").read_text().splitlines():
        line = line.strip()
        if line.startswith("#") and not line.startswith("# @package"):
            return line.lstrip("# ").strip()
    return ""


@cache
def load(group: str, name: str) -> dict:
    import yaml

    return yaml.safe_load((CONFIG_DIR / group / f"{name}.yaml").read_text()) or {}


def loss_class(name: str):
    """The class a loss config instantiates (its ``_target_``), imported."""
    from hydra.utils import get_class

    return get_class(load("loss", name)["_target_"])
