"""What every benchmark shares: the machine's description, medians, timing of subprocesses,
and a small markdown table writer. Imports no torch at module level (start-up is measured)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@dataclass
class Section:
    """One part of BENCHMARKS.md: a title, markdown text, and the raw numbers (for JSON/tests)."""

    title: str
    markdown: str
    data: dict = field(default_factory=dict)


def median(values) -> float:
    return float(statistics.median(values))


def spread(values) -> str:
    """``min..max`` of the repeats, to show the noise next to the median."""
    return f"{min(values):.3g}..{max(values):.3g}"


def table(header: list[str], rows: list[list]) -> str:
    """A GitHub markdown table; floats are printed with 3 significant digits."""

    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e5 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(value: float, target: float) -> str:
    return "**met**" if value <= target else "**missed**"


def run_timed(cmd: list[str], env: dict | None = None, cwd: Path = REPO, timeout: float = 900) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of a whole process (start-up included) and its result. The CPU seconds
    (user + system) it used are set as ``proc.cpu_s``: less sensitive to other processes
    than the wall time, though threads waiting at a barrier count too."""
    import resource

    full_env = {**os.environ, **(env or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc.cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, proc


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return sha + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    """Machine, software and load: printed at the top of BENCHMARKS.md."""
    import torch

    info = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": f"{cpu_model()}, {os.cpu_count()} logical cores",
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "os": f"{platform.system()} {platform.release()}",
        "commit": git_commit(),
        "load_average": " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a",
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    return info


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
