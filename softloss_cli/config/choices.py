"""``group=choice`` overrides checked against the shipped YAML files before Hydra starts,
and the launcher/sweeper plugins that a choice needs."""

from __future__ import annotations

import re

from softloss_cli.config import catalog
from softloss_cli.errors import SoftlossError

#: a ``group=choice`` override (``+``/``~`` allowed), e.g. ``loss=rps`` or ``hydra/launcher=joblib``.
CHOICE = re.compile(r"^[+~]?(?P<group>[a-z_/]+)=(?P<value>.*)$")
_LAUNCHER_EXTRAS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "submitit"),
}
_SWEEPER_EXTRAS = {"optuna": ("hydra_plugins.hydra_optuna_sweeper", "optuna")}


def check_choices(args: list[str]) -> None:
    """Refuse ``group=unknown`` (and a launcher whose plugin is missing) before Hydra starts."""
    for arg in args:
        match = CHOICE.match(arg)
        if not match:
            continue
        group, value = match.group("group"), match.group("value")
        if group in ("hydra/launcher", "hydra/sweeper"):
            plugin = (_LAUNCHER_EXTRAS if group == "hydra/launcher" else _SWEEPER_EXTRAS).get(value)
            if plugin and not _module_exists(plugin[0]):
                raise SoftlossError(f"{group}={value} needs the '{plugin[1]}' extra: pip install 'softloss-cli[{plugin[1]}]'")
            continue
        if group not in catalog.GROUPS or "(" in value or "*" in value:
            continue
        valid = catalog.choices(group)
        for choice in value.split(","):
            choice = choice.strip()
            if choice and choice != "null" and choice not in valid:
                raise SoftlossError(f"unknown {group} '{choice}'; choose one of: {', '.join(valid)}")
            if choice and choice != "null":
                _check_preset_plugins(group, choice)


def _check_preset_plugins(group: str, name: str) -> None:
    """A preset that switches Hydra's launcher or sweeper (``override /hydra/sweeper: optuna``)
    needs that plugin's extra too; say so before Hydra fails to find the config."""
    for entry in catalog.load(group, name).get("defaults") or []:
        if not isinstance(entry, dict):
            continue
        for key, value in entry.items():
            target = str(key).replace("override", "").strip().lstrip("/")
            extras = {"hydra/launcher": _LAUNCHER_EXTRAS, "hydra/sweeper": _SWEEPER_EXTRAS}.get(target)
            plugin = extras.get(str(value)) if extras else None
            if plugin and not _module_exists(plugin[0]):
                raise SoftlossError(f"{group}={name} needs the '{plugin[1]}' extra ({target}={value}): "
                                    f"pip install 'softloss-cli[{plugin[1]}]'")


def _module_exists(name: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(name) is not None
    except ModuleNotFoundError:
        return False
