"""Imports that only the end of a run needs, done in a background thread while it trains.

The figures of ``RunLogger.finish`` need matplotlib (pyplot, the Agg backend) and PIL, whose
imports were paid after the last epoch, where nothing else runs (a share of the runner's fixed
cost in BENCHMARKS.md). Started before the first epoch, the thread imports them while the main
thread is inside torch's kernels (which release the GIL), so the end of the run no longer
waits for them. A failed import here is ignored: the end of the run imports again and reports it there.
"""

from __future__ import annotations

import importlib
import threading

#: the modules imported ahead, in order.
MODULES = ("matplotlib", "matplotlib.pyplot", "matplotlib.backends.backend_agg", "PIL.Image")


def _work(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception:  # reported where the module is really used
            return
        if name == "matplotlib":
            module.use("Agg")  # before pyplot: no GUI backend is probed


def start(modules: tuple[str, ...] = MODULES) -> threading.Thread:
    """Import ``modules`` in a daemon thread; returns the (started) thread."""
    thread = threading.Thread(target=_work, args=(modules,), name="softloss-preload", daemon=True)
    thread.start()
    return thread
