"""``make bench``: every benchmark of softloss, written to BENCHMARKS.md.

    python benchmarks/run_all.py                      # all sections (GPU ones when CUDA is there)
    python benchmarks/run_all.py --only startup,loss  # some sections
    python benchmarks/run_all.py --quick --out /tmp/B.md   # tiny sizes: checks that the code runs

Sections: start-up, loss cost, loss in the step, metrics at scale, runner overhead (CPU; GPU too
on CUDA), own data (an image folder's epochs vs the same images in memory), GPU path (CUDA
only). ``benchmarks/device_run.sh`` measures the GPU rows of the loss sections in one short
run, and ``benchmarks/fold_device.py`` folds them into BENCHMARKS.md. Every figure is a ratio or a time measured side by side in this one run,
the median of at least 5 repeats, printed with the machine, torch version and commit. On a
machine without CUDA the GPU rows say so; nothing is estimated. About 8 minutes alone on a
2-core CPU at ~1,000 img/s (the runner-overhead pairs take 6 of them); longer when shared.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, Section, load_average, machine, table  # noqa: E402

SECTIONS = ("startup", "loss", "step", "metrics", "overhead", "own_data", "gpu")

GPU_COMMAND = "make bench    # or: .venv/bin/python benchmarks/run_all.py --only gpu,overhead,loss"
NOT_MEASURED = f"""**Not measured in this session: this machine has no CUDA device.** Nothing in this file is
estimated. On a CUDA machine, from the repository root, run

```
{GPU_COMMAND}
```

which measures, for `resnet18` at batch 512 on 3x32x32 images held on the GPU: images/s of
the runner and of the bare loop for fp32, fp16 + GradScaler and bf16 autocast, each with
channels_last off and on, and bf16 + channels_last + `trainer.compile=true`; the best setting
as a fraction of the bare loop with the same setting; and the share of step time spent
waiting for data (target under 5%). The same command adds the GPU rows of the runner-overhead
and loss-cost sections."""


def summary(sections: list[Section], before: dict | None = None) -> str:
    """The targets table; with ``before`` (figure -> value of an earlier BENCHMARKS.md) a column of those."""
    rows = []
    for s in sections:
        for name, value, target, ok in s.data.get("verdicts", []):
            row = [name, value, target, "-" if ok is None else ("**met**" if ok else "**missed**")]
            rows.append(row + ([before.get(name, "-")] if before is not None else []))
    header = ["figure", "measured", "target", "verdict"] + (["before"] if before is not None else [])
    return table(header, rows) if rows else "(no section with a target ran)"


def previous_figures(path: Path) -> tuple[dict, dict, str]:
    """From an earlier BENCHMARKS.md: its targets table (figure -> "value (verdict)"), its sections
    (title -> markdown) and its commit, to show before/after."""
    text = path.read_text()
    commit = next((line.split("|")[2].strip() for line in text.splitlines() if line.startswith("| commit |")), "?")
    figures = {}
    glance = text.split("## Targets at a glance", 1)[-1].split("\n## ", 1)[0]
    for line in glance.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0] not in ("figure", "---"):
            figures[cells[0]] = f"{cells[1]} ({cells[3].strip('*')})"
    sections = {}
    for part in text.split("\n## ")[1:]:
        title, _, body = part.partition("\n")
        sections[title.strip()] = body.strip()
    return figures, sections, commit


def write(path: Path, info: dict, sections: list[Section], gpu_note: bool, elapsed: float, args,
          previous: tuple | None = None) -> None:
    head = [
        "# softloss benchmarks",
        "",
        "Written by `make bench` (`benchmarks/run_all.py`); do not edit by hand. Every figure is measured "
        "side by side in one run (ratios where the machine is shared and noisy), as the median of repeats.",
        "",
        table(["", ""], [[k, v] for k, v in info.items()] + [
            ["load average at the end", f"{load_average():.2f}"],
            ["bench wall time", f"{elapsed / 60:.1f} min"],
            ["command", "`" + " ".join(["python benchmarks/run_all.py", *args]) + "`"]]),
        "",
        "## Targets at a glance",
        "",
        summary(sections, previous[0] if previous else None),
        "",
    ]
    if previous:
        head[-1:-1] = ["", f"Before: the figures of the previous BENCHMARKS.md (commit {previous[2]}), whose tables are "
                       "kept at the end of this file for comparison."]
    body = []
    for s in sections:
        body += [f"## {s.title}", "", s.markdown, ""]
    if gpu_note:
        body += ["## GPU path", "", NOT_MEASURED, ""]
    if previous:
        body += [f"## Before (commit {previous[2]})", "",
                 "The same benchmarks before this change, as the previous BENCHMARKS.md recorded them (another "
                 "run, other load: compare the ratios, not the times).", ""]
        for title in ("Loss cost", "Runner overhead"):
            if title in previous[1]:
                old = (previous[1][title].split("\nCommands (one pair)")[0].split("\n**GPU**")[0]
                       .split("<!-- device:")[0].strip())
                body += [f"### {title} (before)", "", old, ""]
    path.write_text("\n".join(head + body).rstrip() + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Run softloss's benchmarks and write BENCHMARKS.md.")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="tiny sizes and 5 repeats: checks the code, not the speed")
    p.add_argument("--repeats", type=int, default=5, help="repeats per figure (at least 5)")
    p.add_argument("--gpu", choices=("auto", "on", "off"), default="auto", help="GPU sections (auto: when CUDA is there)")
    p.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    p.add_argument("--json", default=None, help="also write the raw numbers here")
    p.add_argument("--previous", default=None, help="an earlier BENCHMARKS.md: its figures are shown as 'before'")
    args = p.parse_args(argv)
    raw_args = list(argv if argv is not None else sys.argv[1:])
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    if args.repeats < 5:
        p.error("--repeats must be at least 5 (figures are medians of at least 5 repeats)")

    previous = previous_figures(Path(args.previous)) if args.previous else None
    import torch

    gpu = torch.cuda.is_available() if args.gpu == "auto" else args.gpu == "on"
    info = machine()
    t0 = time.perf_counter()
    sections: list[Section] = []
    for name in wanted:
        t = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        if name == "startup":
            import startup

            sections.append(startup.run(max(args.repeats, 7), args.quick))
        elif name == "loss":
            import loss_cost

            sections.append(loss_cost.run(max(args.repeats, 11), args.quick, gpu))
        elif name == "step":
            import loss_step

            sections.append(loss_step.run(args.quick, gpu))
        elif name == "metrics":
            import metrics_scale

            sections.append(metrics_scale.run(args.repeats, args.quick))
        elif name == "overhead":
            import overhead

            sections.append(overhead.run(args.repeats, args.quick, gpu=gpu))
        elif name == "own_data":
            import own_data

            sections.append(own_data.run(args.repeats, args.quick))
            if gpu:
                sections.append(own_data.run(args.repeats, args.quick, gpu=True))
        elif name == "gpu" and gpu:
            import gpu as gpu_bench

            sections.append(gpu_bench.run(args.quick, "cuda"))
        print(f"[bench] {name}: {time.perf_counter() - t:.0f} s", flush=True)
    elapsed = time.perf_counter() - t0
    out = Path(args.out)
    write(out, info, sections, not gpu and "gpu" in wanted, elapsed, raw_args, previous)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, **{s.title: s.data for s in sections}}, indent=2,
                                              default=str))
    print(f"[bench] wrote {out} in {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
