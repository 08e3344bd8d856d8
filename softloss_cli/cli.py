"""``softloss``: train, list, eval, report. Imports nothing heavy until a command needs it.

Everything after ``train`` goes to Hydra untouched (overrides, ``-m``, ``--cfg job``,
``hydra.run.dir=...``). User mistakes print one line and exit non-zero; set
``SOFTLOSS_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import os
import re
import sys

USAGE = """\
usage: softloss <command> [args]

Train and compare classification losses that shape a softmax (or sigmoid) output.

commands:
  train [OVERRIDES] [-m]   train one run, or a Hydra multirun sweep with -m
                           e.g. softloss train loss=rps data=ordinal_images trainer.epochs=3
                                softloss train -m loss=ce,rps seed=0,1,2
                           `softloss train --help` lists config groups and their choices
  list                     datasets, models and losses with a one-line description each
  eval RUN_DIR [...]       re-evaluate a run's checkpoint (softloss eval --help)
  report PATH [...]        compare finished runs and sweeps (softloss report --help)

options:
  -h, --help               this message
  --version                the version

Runs land in runs/ (single: runs/<data>-<loss>/<date>_<time>, sweeps: runs/multirun/...).
Watch them with: tensorboard --logdir runs
"""

# group=choice overrides that can be checked against the shipped YAML files before Hydra starts.
_CHOICE = re.compile(r"^[+~]?(?P<group>[a-z_/]+)=(?P<value>.*)$")
_LAUNCHER_EXTRAS = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "submitit"),
}
_SWEEPER_EXTRAS = {"optuna": ("hydra_plugins.hydra_optuna_sweeper", "optuna")}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if argv[0] == "--version":
        from softloss_cli import __version__

        print(f"softloss {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    _one_line_warnings()
    commands = {"train": _train, "list": _list, "eval": _eval, "report": _report}
    if command not in commands:
        return _fail(f"unknown command '{command}'; choose one of: {', '.join(commands)} (softloss --help)", 2)
    return _run_guarded(commands[command], rest)


def _one_line_warnings() -> None:
    """softloss's own warnings print as one line (``softloss: warning: ...``), like its errors,
    instead of Python's ``file:line: UserWarning`` followed by a line of our source code."""
    import warnings

    default = warnings.formatwarning

    def format_warning(message, category, filename, lineno, line=None):
        if f"{os.sep}softloss_cli{os.sep}" in str(filename) and os.environ.get("SOFTLOSS_DEBUG") != "1":
            return f"softloss: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = format_warning


def _run_guarded(fn, args: list[str]) -> int:
    """Run a command; turn user mistakes into one line and an exit code."""
    if os.environ.get("SOFTLOSS_DEBUG") == "1":
        return fn(args) or 0
    from softloss_cli.errors import SoftlossError

    try:
        return fn(args) or 0
    except SoftlossError as exc:
        from softloss_cli.experiment import one_line

        return _fail(one_line(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:  # a Hydra/OmegaConf error or a bug: still one line, no traceback
        if isinstance(exc.__cause__, SoftlossError):  # raised inside instantiate(): our message says it all
            from softloss_cli.experiment import one_line

            return _fail(one_line(exc.__cause__), exc.__cause__.exit_code)
        return _fail(_describe(exc, args), 1 if not _is_config_error(exc) else 2)


def _fail(message: str, code: int) -> int:
    print(f"softloss: error: {message}", file=sys.stderr)
    return code


def _is_config_error(exc: Exception) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"ConfigCompositionException", "OverrideParseException", "OmegaConfBaseException",
                         "InstantiationException", "MissingConfigException", "HydraException"})


def _describe(exc: Exception, args: list[str], composed=None) -> str:
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
    if _is_config_error(exc):
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

    from softloss_cli.catalog import CONFIG_DIR, GROUPS

    # Only real group choices: a misspelt top-level key (`sed=1`) looks like one too.
    groups = [a for a in args if _CHOICE.match(a) and _CHOICE.match(a).group("group") in GROUPS]
    groups = [g.split(",")[0] for g in groups]  # first value of a sweep
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=groups)


def check_choices(args: list[str]) -> None:
    """Refuse ``group=unknown`` (and a launcher whose plugin is missing) before Hydra starts."""
    from softloss_cli import catalog
    from softloss_cli.errors import SoftlossError

    for arg in args:
        match = _CHOICE.match(arg)
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
    from softloss_cli import catalog
    from softloss_cli.errors import SoftlossError

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


def _train(args: list[str]) -> int:
    check_choices(args)
    # Hydra re-raises instead of printing its own trace; _run_guarded turns it into one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    from softloss_cli import experiment, sweep

    if _is_plain_multirun(args):
        import warnings

        from softloss_cli.sweep_plan import check_sweep_jobs

        for message in check_sweep_jobs([a for a in args if not a.startswith("-")]):
            warnings.warn(message, stacklevel=1)
    sweep.LAST_SWEEP.clear()
    sweep.CURRENT_SWEEP.clear()
    saved = sys.argv
    sys.argv = ["softloss train", *args]
    try:
        experiment.train()
    except BaseException as exc:
        # A launcher that raises (a joblib worker killed by the OS) skips Hydra's end-of-sweep
        # callback: record the jobs that ran before the error reaches the user.
        sweep.finish_interrupted_sweep(exc)
        raise
    finally:
        sys.argv = saved
    return 1 if sweep.LAST_SWEEP.get("failed") else 0


def _is_plain_multirun(args: list[str]) -> bool:
    """A sweep (``-m``, or an ``hparams_search`` preset) of the shipped configs (not
    ``--cfg``/``--info``/another config dir)."""
    flags = {a.split("=", 1)[0] for a in args if a.startswith("-")}
    other = {"--cfg", "-c", "--info", "--help", "-h", "--hydra-help", "--config-dir", "-cd", "--config-path", "-cp",
             "--config-name", "-cn", "--resolve", "--package", "-p", "--run", "-r", "--shell-completion", "-sc"}
    search = any(a.lstrip("+").startswith(("hparams_search=", "hydra.mode=MULTIRUN")) for a in args)
    return bool(flags & {"-m", "--multirun"} or search) and not flags & other


def _list(args: list[str]) -> int:
    from softloss_cli.listing import print_catalog

    print_catalog(args)
    return 0


def _eval(args: list[str]) -> int:
    from softloss_cli.evaluation import main as eval_main

    return eval_main(args)


def _report(args: list[str]) -> int:
    from softloss_cli.report import main as report_main

    return report_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
