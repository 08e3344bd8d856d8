"""One section of the GPU run (``benchmarks/device_run.sh``), written to ``--out`` as it ends.

    python benchmarks/device_bench.py env  --out $OUT        # the machine: GPU, torch, triton
    python benchmarks/device_bench.py loss --out $OUT        # loss cost on CUDA (loss_cost.py)
    python benchmarks/device_bench.py step --out $OUT        # loss in the step, GPU config (loss_step.py)
    python benchmarks/device_bench.py loss --device cpu --quick --out /tmp/x   # the same code on the CPU

Each section writes ``<section>.json`` (the raw numbers) and ``<section>.md`` (its table), which
``benchmarks/fold_device.py`` folds into BENCHMARKS.md. Needs torch and the package only: no
Hydra (the loss configs are read with PyYAML where Hydra is missing).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def env_section(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "date": time.strftime("%Y-%m-%d %H:%M %Z")}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = "none"
    from common import git_commit

    info["commit"] = git_commit()
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("section", choices=("env", "loss", "step"))
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the code, not the speed")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.section == "env":
        data, md = env_section(args.device), None
    elif args.section == "loss":
        import loss_cost

        classes = (30,) if args.quick else loss_cost.CLASSES
        batch = 256 if args.quick else loss_cost.B
        results: dict = {}
        done = []
        for c in classes:  # written after each class count: a run cut short keeps what it measured
            for name, cells in loss_cost.measure(args.device, args.repeats, (c,), batch).items():
                results.setdefault(name, {}).update(cells)
            done.append(c)
            table, missed = loss_cost.render(results, done, args.device)
            md = "\n".join([loss_cost.describe(args.device, batch, args.repeats), "", table, ""]
                           + ([f"Over target on {args.device}: {', '.join(f'`{m}`' for m in missed)}.", ""]
                              if missed else []))
            data = {"device": args.device, "batch": batch, "classes": done, "results": results, "missed": missed,
                    "seconds": time.perf_counter() - t0}
            (out / "loss.json").write_text(json.dumps(data, indent=2, default=str))
            (out / "loss.md").write_text(md)
            print(f"[device] loss: C = {c} done at {time.perf_counter() - t0:.0f} s", flush=True)
    else:
        import loss_step

        m = loss_step.measure("gpu", args.quick, device=args.device)
        table, missed = loss_step.render(m)
        md = "\n".join([f"**GPU**: {loss_step.describe(m['config'])}:", "", table, ""])
        data = {**m, "missed": missed}
    data["seconds"] = time.perf_counter() - t0
    (out / f"{args.section}.json").write_text(json.dumps(data, indent=2, default=str))
    if md is not None:
        (out / f"{args.section}.md").write_text(md)
    print(f"[device] {args.section}: {data['seconds']:.0f} s -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
