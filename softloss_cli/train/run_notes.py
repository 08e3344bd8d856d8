"""What a run records about its data beyond the metrics: the monitor it chose, the label
order it trained on, the files it skipped, and what ``softloss predict`` needs to apply it.

- ``resolve_monitor``: ``trainer.monitor=auto`` -> the validation metric that picks best.pt;
- ``announce_data``: the run's first log lines (train.log and the terminal) and
  ``skipped_images.txt``;
- ``complete_task_record``: adds to ``task.json`` (written by the logger) the class order,
  the monitor, the preprocessing (input shape, mean, std), the loss's activation and, for
  multiclass runs, the Average-K thresholds chosen on validation, per K.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("softloss")

#: ``trainer.monitor=auto`` per evaluation task kind (Average-K data: see ``resolve_monitor``).
AUTO_MONITOR = {"multiclass": "val/accuracy", "ordinal": "val/mae", "multilabel": "val/map"}
TASK_FILE = "task.json"
SKIPPED_FILE = "skipped_images.txt"


def resolve_monitor(setting: str, task) -> str:
    """The validation metric that picks ``best.pt``: ``setting`` unless it is ``auto``; then
    ``val/mae`` for ordinal tasks, ``val/map`` for multi-label ones, ``val/avgk_acc_k{K}`` for
    Average-K data (a dataset declaring ``task.extras['average_k'] = K``) and ``val/accuracy``
    otherwise. A partial task is monitored as its evaluation kind."""
    if setting != "auto":
        return setting
    k = (task.extras or {}).get("average_k")
    if k and task.eval_kind == "multiclass":
        return f"val/avgk_acc_k{int(k)}"
    return AUTO_MONITOR.get(task.eval_kind, "val/accuracy")


def announce_data(data, run_dir: Path, monitor: str, setting: str) -> None:
    """Log (and print) what the run trains on: the label order and values for the user's own
    data, split sizes, the image cache, skipped files, and the monitor; write the skipped files."""
    task = data.task
    lines = []
    labels = (task.extras or {}).get("labels")
    if labels:
        lines.append(f"data={data.name}: {labels}" + (" (trained as partial: 'not this label' rows)"
                                                      if task.kind == "partial" else ""))
    info = data.info or {}
    if "cache" in info:
        sizes = ", ".join(f"{k} {v}" for k, v in info.get("sizes", {}).items())
        source = {"hit": "read from the decoded-image cache", "decoded": "decoded once into the cache",
                  "disk": "read from disk per batch (above data.cache_max_gb)"}[info["cache"]]
        lines.append(f"images: {sizes}; {source}" + (f" {info['cache_file']}" if info.get("cache_file") else ""))
    skipped = info.get("skipped_images") or []
    if skipped:
        (run_dir / SKIPPED_FILE).write_text("".join(f"{os.path.abspath(s['path'])}\t{s['reason']}\n" for s in skipped))
        lines.append(f"skipped {len(skipped)} unreadable image(s) (data.on_bad_image=skip): "
                     f"listed in {run_dir / SKIPPED_FILE}")
    lines.append(f"monitor: {monitor}" + (" (trainer.monitor=auto)" if setting == "auto" else ""))
    for line in lines:
        log.info("%s", line)
        if labels or skipped:  # the user's own data: say it on the terminal too
            print(line, flush=True)


def avgk_thresholds(outputs: dict) -> dict[str, float]:
    """The Average-K thresholds the test metrics used (chosen on validation), ``{K: value}`` in
    ``metrics.average_k.set_scores`` units (log-probabilities, or logits of a sigmoid head)."""
    test = outputs.get("test")
    found = getattr(test, "info", {}).get("avgk_thresholds") if test is not None else None
    return {str(k): float(v) for k, v in (found or {}).items()}


def complete_task_record(run_dir: Path, data, loss_fn, outputs: dict, monitor: str) -> None:
    """Add to ``task.json`` what ``softloss predict`` and ``softloss report`` read (module docstring)."""
    path = run_dir / TASK_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    extras = data.task.extras or {}
    record.update({
        "data": data.name,
        "class_order": extras.get("class_order"),
        "labels": extras.get("labels"),
        "monitor": monitor,
        "input_shape": list(data.input_shape),
        "mean": list(data.mean),
        "std": list(data.std),
        "activation": getattr(loss_fn, "activation", "softmax"),
        "set_source": getattr(loss_fn, "set_source", "logits"),
        "average_k": extras.get("average_k"),
        "avgk_thresholds": avgk_thresholds(outputs),
    })
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
