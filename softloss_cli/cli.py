"""``softloss``: dispatches ``train``, ``list``, ``eval``, ``report``, ``predict`` to ``commands/``. Imports
nothing heavy until a command needs it.

Everything after ``train`` goes to Hydra untouched (overrides, ``-m``, ``--cfg job``,
``hydra.run.dir=...``). User mistakes print one line and exit non-zero; set
``SOFTLOSS_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import os
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
  predict RUN_DIR INPUT... apply a run to image files, folders or a manifest (softloss predict --help)

options:
  -h, --help               this message
  --version                the version

Runs land in runs/ (single: runs/<data>-<loss>/<date>_<time>, sweeps: runs/multirun/...).
Watch them with: tensorboard --logdir runs
"""

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
    commands = {"train": _train, "list": _list, "eval": _eval, "report": _report, "predict": _predict}
    if command not in commands:
        return _fail(f"unknown command '{command}'; choose one of: {', '.join(commands)} (softloss --help)", 2)
    return _run_guarded(commands[command], rest)


def entry() -> int:
    """The ``softloss`` console script (and ``python -m softloss_cli``): ``main``, then a quick exit.

    What the run wrote is closed before ``main`` returns (event files, logs, checkpoints),
    so the interpreter's shutdown has nothing left to save, only to undo: a last garbage
    collection over every object torch and its imports created (0.3-0.4 s here), then every
    module torch, Hydra and matplotlib loaded cleared one by one (another 0.3 s once
    ``torch._dynamo`` is in). ``exit_now`` ends the process after the shutdown steps that do
    matter. Not done by ``main`` itself: a process that goes on after it (the tests) must not end.
    """
    code = main()
    exit_now(code)
    return code  # exit_now declined (a live worker thread): the normal shutdown ends the process


def exit_now(code: int) -> None:
    """End the process with ``code`` as the normal shutdown would, minus its teardown.

    Done, in the normal shutdown's order: non-daemon threads are waited for (``threading``'s
    own shutdown hook when the interpreter has it; otherwise, with such a thread alive,
    nothing here: the normal exit follows), the ``atexit`` functions run (logging's flush and
    close of ``train.log``, multiprocessing's worker clean-up, ``weakref.finalize``
    callbacks), stdout and stderr are flushed; then ``os._exit``. Skipped: the last garbage
    collection and the clearing of modules, which only free memory the kernel reclaims
    anyway. Without ``atexit._run_exitfuncs`` (another Python) it returns and the normal
    exit runs.
    """
    import atexit
    import threading

    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    shutdown_threads = getattr(threading, "_shutdown", None)
    if run_exitfuncs is None:
        return
    if shutdown_threads is not None:
        shutdown_threads()
    elif any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code if isinstance(code, int) else 1)


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
    from softloss_cli.errors import SoftlossError, one_line

    try:
        return fn(args) or 0
    except SoftlossError as exc:
        return _fail(one_line(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:  # a Hydra/OmegaConf error or a bug: still one line, no traceback
        if isinstance(exc.__cause__, SoftlossError):  # raised inside instantiate(): our message says it all
            return _fail(one_line(exc.__cause__), exc.__cause__.exit_code)
        from softloss_cli.config.describe import describe_exception, is_config_error

        return _fail(describe_exception(exc, args), 2 if is_config_error(exc) else 1)


def _fail(message: str, code: int) -> int:
    print(f"softloss: error: {message}", file=sys.stderr)
    return code


def _train(args: list[str]) -> int:
    from softloss_cli.commands.train import main as train_main

    return train_main(args)


def _list(args: list[str]) -> int:
    from softloss_cli.commands.listing import print_catalog

    print_catalog(args)
    return 0


def _eval(args: list[str]) -> int:
    from softloss_cli.commands.evaluate import main as eval_main

    return eval_main(args)


def _report(args: list[str]) -> int:
    from softloss_cli.commands.report import main as report_main

    return report_main(args)


def _predict(args: list[str]) -> int:
    from softloss_cli.commands.predict import main as predict_main

    return predict_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
