"""``softloss predict RUN_DIR INPUT...``: apply a trained run to image files.

INPUT: image files, folders (searched recursively, any layout, sorted) or manifests
(``.csv``/``.jsonl`` with a ``path`` column, paths relative to the manifest; its ``group``
column groups images, its ``label`` column gives true sums). One row per image (path,
class, probability, top-5; ordinal: expected and argmax value; Average-K: the set at the
run's validation threshold; multi-label: presence probabilities and the set), printed as a
table or written with ``--out FILE.csv|.jsonl``. Ordinal runs with ``--group-size N`` or a
manifest ``group`` column also get a table of group sums (``--out`` writes it beside the
rows as ``FILE.groups.csv|.jsonl``). The Python side lives in ``commands/predictor.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from softloss_cli.config.argparsing import command_parser
from softloss_cli.errors import SoftlossError

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson")


def _parser() -> argparse.ArgumentParser:
    p = command_parser(
        "predict",
        "Apply a trained run to image files: one row per image (class, probability, top-5; ordinal "
        "expected value; Average-K set; multi-label presence), and group sums for ordinal runs.",
        ["softloss predict runs/image_folder-ce/2026-12-04_10-00-00 photos/",
         "softloss predict RUN seq/*.png --group-size 8",
         "softloss predict RUN new.csv --out predictions.csv --checkpoint last"],
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or .csv/.jsonl manifests")
    p.add_argument("--out", metavar="FILE", help="write the rows to FILE.csv or FILE.jsonl instead of printing them")
    p.add_argument("--checkpoint", choices=("best", "last"), help="default: the run's eval.checkpoint")
    p.add_argument("--group-size", type=int, metavar="N",
                   help="ordinal runs: sums over consecutive groups of N images in input order")
    p.add_argument("--batch-size", type=int, default=256, metavar="B", help="images per forward pass (default 256)")
    p.add_argument("--device", default="auto", metavar="D", help="auto (default) | cpu | cuda | cuda:N")
    p.add_argument("--k", type=int, metavar="K",
                   help="Average-K sets of this K (multiclass runs; default: the data's K for Average-K runs)")
    p.add_argument("--strict", action="store_true", help="refuse an unreadable image instead of writing an error row")
    return p


def _image_files(folder: Path) -> list[str]:
    from softloss_cli.data.images import is_image_file

    found = []
    for d, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [x for x in dirs if not x.startswith(".")]  # .ipynb_checkpoints, .git: never inputs
        found += [os.path.join(d, f) for f in files if is_image_file(f)]
    return sorted(found)


def expand_inputs(inputs: list[str]) -> tuple[list[str], list | None, list | None]:
    """``(paths, groups, truths)``: every image the inputs name, in order; groups and true
    values from manifests (None when no input is a manifest with those columns)."""
    from softloss_cli.data.labels import numeric_value
    from softloss_cli.data.manifest import read_manifest

    paths, groups, truths = [], [], []
    for item in inputs:
        p = Path(os.path.expanduser(item))
        if p.is_dir():
            found = _image_files(p)
            if not found:
                raise SoftlossError(f"no images under {p}")
            paths += found
            groups += [None] * len(found)
            truths += [None] * len(found)
        elif p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
            for row in read_manifest(p):
                if not row.path:
                    raise SoftlossError(f"{p} row {row.line}: empty path")
                paths.append(os.path.normpath(os.path.join(p.parent, row.path)))
                groups.append(row.group)
                truths.append(numeric_value(row.label) if row.label is not None else None)
        elif p.is_file():
            paths.append(str(p))
            groups.append(None)
            truths.append(None)
        else:
            raise SoftlossError(f"input {item} does not exist (pass image files, folders or .csv/.jsonl manifests)")
    has_groups = any(g is not None for g in groups)
    return paths, groups if has_groups else None, truths if any(t is not None for t in truths) else None


def _flat(row: dict, names) -> dict:
    """A row for CSV: lists and dicts as ``name:prob;...`` text."""
    out = {"path": row["path"], "class": row.get("class", ""), "prob": _fmt(row.get("prob"))}
    if "top5" in row:
        out["top5"] = ";".join(f"{n}:{q:.4f}" for n, q in row["top5"])
    for key in ("expected", "argmax_value"):
        if key in row:
            out[key] = _fmt(row[key])
    if "presence" in row:
        out.update({f"p_{n}": _fmt(row["presence"][n]) for n in names})
    if "set" in row:
        out["set"] = ";".join(row["set"])
        out["set_size"] = row["set_size"]
    out["error"] = row.get("error") or ""
    return out


def _fmt(value) -> str:
    return "" if value is None else f"{value:.6g}"


def write_rows(path: Path, rows: list[dict], names) -> None:
    """CSV (one column per field, sets and top-5 as ``;``-separated text) or JSONL (one object per row)."""
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix.lower() == ".jsonl":
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        flat = [_flat(r, names) if "top5" in r or "error" in r else r for r in rows]
        fields = list(dict.fromkeys(k for r in flat for k in r))
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(flat)
    tmp.replace(path)


def _print_rows(rows: list[dict], group_rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=title, title_justify="left")
    columns = ["path", "class", "prob"] + [c for c in ("expected", "argmax_value", "set") if any(c in r for r in rows)]
    columns += ["top5"]
    for c in columns:
        table.add_column(c, justify="right" if c in ("prob", "expected", "argmax_value") else "left")
    for r in rows:
        if r.get("error"):
            table.add_row(r["path"], f"[red]error: {r['error']}[/red]", *[""] * (len(columns) - 2))
            continue
        cells = {"path": r["path"], "class": r["class"], "prob": f"{r['prob']:.4f}",
                 "expected": f"{r.get('expected', 0):.3f}", "argmax_value": f"{r.get('argmax_value', 0):g}",
                 "set": " ".join(r.get("set", [])),
                 "top5": " ".join(f"{n}:{q:.2f}" for n, q in r["top5"])}
        table.add_row(*(cells[c] for c in columns))
    console.print(table)
    if group_rows:
        groups = Table(title="group sums", title_justify="left")
        keys = [k for k in ("group", "images", "unreadable", "sum_expected", "sum_argmax", "true_sum")
                if any(g.get(k) is not None for g in group_rows)]
        for k in keys:
            groups.add_column(k, justify="left" if k == "group" else "right")
        for g in group_rows:
            groups.add_row(*(_cell(g.get(k)) for k in keys))
        console.print(groups)


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _progress_bar(total: int, batch_size: int):
    """A rich progress bar on stderr for inputs longer than one batch (None otherwise)."""
    if total <= batch_size or not sys.stderr.isatty():
        return None, None
    from rich.console import Console
    from rich.progress import Progress

    bar = Progress(console=Console(stderr=True), transient=True)
    task = bar.add_task("predict", total=total)
    bar.start()
    return bar, (lambda done, _total: bar.update(task, completed=done))


def main(args: list[str]) -> int:
    opts = _parser().parse_intermixed_args(args)
    if opts.group_size is not None and opts.group_size < 1:
        raise SoftlossError(f"predict: --group-size must be >= 1, got {opts.group_size}")
    if opts.batch_size < 1:
        raise SoftlossError(f"predict: --batch-size must be >= 1, got {opts.batch_size}")
    out = Path(opts.out) if opts.out else None
    if out is not None and out.suffix.lower() not in (".csv", ".jsonl"):
        raise SoftlossError(f"predict: --out must end in .csv or .jsonl, got {out}")
    if out is not None and not out.parent.is_dir():
        raise SoftlossError(f"predict: the folder of --out {out} does not exist")
    paths, groups, truths = expand_inputs(opts.inputs)

    from softloss_cli.commands.predictor import load_run

    predictor = load_run(opts.run_dir, opts.checkpoint, opts.device, opts.k)
    if (opts.group_size or groups) and predictor.eval_kind != "ordinal":
        if opts.group_size:
            raise SoftlossError(f"predict: --group-size needs an ordinal run; {opts.run_dir} is {predictor.eval_kind}")
        groups = None  # a manifest's group column has no sums to show for a non-ordinal run
    bar, progress = _progress_bar(len(paths), opts.batch_size)
    try:
        result = predictor.predict(paths, opts.batch_size, progress, opts.strict, groups, truths)
    finally:
        if bar is not None:
            bar.stop()
    rows = result.rows()
    group_rows = result.group_rows(opts.group_size) if (opts.group_size or groups) else []
    errors = sum(1 for r in rows if r.get("error"))
    if out is None:
        _print_rows(rows, group_rows, f"predictions of {opts.run_dir}")
    else:
        write_rows(out, rows, predictor.class_names)
        message = f"{len(rows)} rows -> {out}"
        if group_rows:
            group_file = out.with_name(f"{out.stem}.groups{out.suffix}")
            write_rows(group_file, group_rows, predictor.class_names)
            message += f"; {len(group_rows)} group sums -> {group_file}"
        print(message)
    if errors:
        print(f"{errors} unreadable image(s): error rows (--strict refuses them)", file=sys.stderr)
    return 0


# The Python API, importable from the command's module too: ``from softloss_cli.commands.predict import load_run``.
from softloss_cli.commands.predictor import Predictions, Predictor, load_run  # noqa: E402

__all__ = ["Predictions", "Predictor", "expand_inputs", "load_run", "main", "write_rows"]
