"""One line for an exception from Hydra, OmegaConf or ``instantiate``: what the CLI prints
and what a failed sweep job records."""

from __future__ import annotations

import re

from softloss_cli.config.choices import CHOICE


def is_config_error(exc: Exception) -> bool:
    """Whether ``exc`` is Hydra's or OmegaConf's way of saying the config is wrong (exit 2)."""
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"ConfigCompositionException", "OverrideParseException", "OmegaConfBaseException",
                         "InstantiationException", "MissingConfigException", "HydraException"})


def describe_exception(exc: Exception, args: list[str], composed=None) -> str:
    """One line for an exception from Hydra, OmegaConf or instantiate (``composed``: the
    config of ``args``' group choices, when the caller has it)."""
    text = str(exc).strip()
    match = re.search(r"Could not override '([^']+)'", text)
    if match:
        return _unknown_key_message(match.group(1), args, composed)
    if type(exc).__name__ == "InstantiationException" and exc.__cause__ is not None:
        target = re.search(r"target '([^']+)'", text)
        where = f" ({target.group(1)})" if target else ""
        return f"invalid config{where}: {str(exc.__cause__).strip().splitlines()[0]}"
    if is_config_error(exc):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return " ".join(lines[:2]) if lines else type(exc).__name__
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first} (set SOFTLOSS_DEBUG=1 for the traceback)"


def _unknown_key_message(key: str, args: list[str], composed=None) -> str:
    """'unknown key trainer.epoch (did you mean trainer.epochs?); keys under trainer: ...'."""
    import difflib

    parent, _, leaf = key.rpartition(".")
    try:
        node = composed if composed is not None else _compose_without_dotted(args)
        for part in filter(None, parent.split(".")):
            node = node[part]
        keys = sorted(str(k) for k in node.keys())
    except Exception:
        return f"unknown config key '{key}' (add it with +{key}=... only if you mean to extend the config)"
    close = difflib.get_close_matches(leaf, keys, n=1)
    hint = f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""
    return f"unknown config key '{key}'{hint}; keys under {parent or 'the top level'}: {', '.join(keys)}"


def _compose_without_dotted(args: list[str]):
    """The config composed from the group choices on the command line only."""
    from hydra import compose, initialize_config_dir

    from softloss_cli.config.catalog import CONFIG_DIR, GROUPS

    # Only real group choices: a misspelt top-level key (`sed=1`) looks like one too.
    groups = [a for a in args if CHOICE.match(a) and CHOICE.match(a).group("group") in GROUPS]
    groups = [g.split(",")[0] for g in groups]  # first value of a sweep
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=groups)
