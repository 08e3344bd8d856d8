"""Metrics at scale: seconds and extra peak memory of the metrics that need a whole split.

Each case runs in its own process (``python benchmarks/metrics_scale.py CASE``): the inputs
are built in place (no transient copies), the process's peak resident memory is read, the
metric runs once to warm up and then ``repeats`` times, and the peak is read again. The
growth of the peak, divided by the size of the scores, is the memory figure (a copy of
the scores = 1.0x). Time: median of the repeats. Targets: under 5 s each, extra memory at
most 2x the scores (the Average-K threshold: at most 1x, as its issue asks).
"""

from __future__ import annotations

import json
import resource
import sys
import time

from common import PYTHON, REPO, Section, median, table

TIME_TARGET_S = 5.0

# name: (module, function, N, C, kind, memory target as a multiple of the scores, description)
CASES = {
    "avgk_threshold": ("average_k", "avgk_threshold", 31000, 1081, "probs", 1.0, "Average-K threshold, K = 2"),
    "avgk_accuracy": ("average_k", "avgk_accuracy", 31000, 1081, "probs", 2.0, "Average-K accuracy at that threshold"),
    "average_k_group": ("average_k", "average_k_metrics", 31000, 1081, "group", 2.0,
                        "all Average-K metrics of a test split (K = 1, 2, 3, 5; thresholds on a val split)"),
    "qwk": ("ordinal", "qwk", 100000, 30, "probs", 2.0, "quadratic weighted kappa"),
    "ece": ("classification", "ece", 100000, 30, "probs", 2.0, "expected calibration error, 15 bins"),
    "map": ("multilabel", "mean_average_precision", 100000, 100, "multilabel", 2.0, "mAP over 100 categories"),
}
QUICK_N = 2000


def peak_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def one(case: str, repeats: int, quick: bool) -> dict:
    """Run in a fresh process: time and memory of one case."""
    from importlib import import_module

    import torch

    module, fn_name, n, c, kind, _, _ = CASES[case]
    n = QUICK_N if quick else n
    try:
        fn = getattr(import_module(f"softloss_cli.metrics.{module}"), fn_name)
    except (ImportError, AttributeError) as exc:
        return {"error": f"not available: {type(exc).__name__}: {exc}"}
    g = torch.Generator().manual_seed(0)
    scores = torch.empty(n, c)
    scores.exponential_(generator=g)  # in place: no transient copy in the baseline peak
    scores.div_(scores.sum(dim=1, keepdim=True))
    if kind == "multilabel":
        targets = torch.rand(n, c, generator=g) < 0.05
        targets = targets.float()
    else:
        targets = torch.randint(0, c, (n,), generator=g)
    if kind == "group":
        from softloss_cli.metrics import EvalOutputs
        from softloss_cli.tasks import Task

        logits = scores.log()  # the group reads logits (log-softmax) and scores, as the trainer gives them
        info = {"activation": "softmax", "set_source": "logits"}
        out = EvalOutputs(logits, targets, scores, info=dict(info))
        ref = EvalOutputs(logits, targets, scores, info=dict(info))
        task = Task("multiclass", c)
        call = lambda: fn(out, task, ref)  # noqa: E731
    elif fn_name == "avgk_threshold":
        call = lambda: fn(scores, 2)  # noqa: E731
    elif fn_name == "avgk_accuracy":
        # A fixed threshold (about 2 labels per set for these scores): computing the real one
        # here would raise the baseline peak and hide this function's own memory.
        call = lambda: fn(scores, targets, 2.0 / c)  # noqa: E731
    else:
        call = lambda: fn(scores, targets)  # noqa: E731
    scores_mb = scores.numel() * scores.element_size() / 2**20
    before = peak_mb()
    call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return {"seconds": median(times), "times": times, "extra_mb": max(0.0, peak_mb() - before), "scores_mb": scores_mb,
            "n": n, "c": c}


def run(repeats: int = 5, quick: bool = False) -> Section:
    from common import run_timed

    rows, data, verdicts = [], {}, []
    for case, (module, fn_name, n, c, _, mem_target, what) in CASES.items():
        cmd = [PYTHON, str(REPO / "benchmarks" / "metrics_scale.py"), case, "--repeats", str(repeats)]
        _, proc = run_timed(cmd + (["--quick"] if quick else []))
        if proc.returncode != 0:
            result = {"error": f"failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"}
        else:
            result = json.loads(proc.stdout.strip().splitlines()[-1])
        data[case] = result
        name = f"`{module}.{fn_name}`"
        if "error" in result:
            rows.append([name, what, f"{n:,} x {c:,}", result["error"], "-", "-", "-"])
            verdicts.append((f"metric {fn_name}", "not measured", "-", None))
            continue
        ratio = result["extra_mb"] / result["scores_mb"]
        ok = result["seconds"] <= TIME_TARGET_S and ratio <= mem_target
        rows.append([name, what, f"{result['n']:,} x {result['c']:,}", f"{result['seconds']:.3f}",
                     f"{result['extra_mb']:.0f} MB = {ratio:.2f}x of {result['scores_mb']:.0f} MB",
                     f"< {TIME_TARGET_S:g} s, <= {mem_target:g}x", "**met**" if ok else "**missed**"])
        verdicts.append((f"metric {fn_name} at {result['n']:,} x {result['c']:,}",
                         f"{result['seconds']:.2f} s, {ratio:.1f}x memory", f"< {TIME_TARGET_S:g} s, <= {mem_target:g}x", ok))
    md = [f"CPU, float32 scores, median of {repeats} runs after a warm-up, each case in a fresh process; memory = "
          "growth of the process's peak resident memory during the calls, over the size of the scores.", "",
          table(["metric", "what", "N x C", "seconds", "extra peak memory", "target", "verdict"], rows)]
    data["verdicts"] = verdicts
    return Section("Metrics at scale", "\n".join(md), data)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("case", choices=sorted(CASES))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    print(json.dumps(one(a.case, a.repeats, a.quick)))
