"""Start-up: whole processes a user waits for before anything trains.

``softloss --help`` (target under 0.5 s) and ``softloss train loss=nope`` (an invalid choice,
refused before Hydra or torch start: target under 1.5 s), with ``python -c pass`` alongside
as the floor. The commands run in turn (interleaved), ``repeats`` times; figures are medians.
"""

from __future__ import annotations

from common import PYTHON, Section, median, run_timed, spread, table, verdict
from overhead import softloss_cmd

CASES = {
    "python -c pass (floor)": ([PYTHON, "-c", "pass"], None, 0),
    "softloss --help": (["--help"], 0.5, 0),
    "softloss train loss=nope": (["train", "loss=nope"], 1.5, 2),
}


def run(repeats: int = 7, quick: bool = False) -> Section:
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(repeats):
        for name, (args, _, code) in CASES.items():
            cmd = args if name.startswith("python") else softloss_cmd() + args
            wall, proc = run_timed(cmd)
            if proc.returncode != code:
                raise RuntimeError(f"{name}: exit code {proc.returncode}, expected {code}: {proc.stderr[-500:]}")
            times[name].append(wall)
    rows = []
    for name, (_, target, _) in CASES.items():
        m = median(times[name])
        rows.append([f"`{name}`", f"{m:.3f}", spread(times[name]), f"< {target} s" if target else "-",
                     verdict(m, target) if target else "-"])
    md = f"Whole processes, median of {repeats} interleaved runs.\n\n" + table(
        ["command", "seconds (median)", "min..max", "target", "verdict"], rows)
    data = {k: {"median": median(v), "times": v} for k, v in times.items()}
    data["verdicts"] = [(f"start-up `{k}`", f"{median(times[k]):.2f} s", f"< {t} s", median(times[k]) < t)
                        for k, (_, t, _) in CASES.items() if t]
    return Section("Start-up", md, data)
