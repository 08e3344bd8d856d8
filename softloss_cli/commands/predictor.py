"""A trained run applied to image files: the Python side of ``softloss predict``.

    from softloss_cli.commands.predictor import load_run

    run = load_run("runs/image_folder-ce/2026-12-04_10-00-00")      # best.pt (the run's choice)
    result = run.predict(["a.png", "b.png"])
    for row in result.rows():
        print(row["path"], row["class"], row["prob"])

``load_run`` rebuilds the model from the run's saved config (``.hydra/config.yaml``) and
loads a checkpoint; preprocessing is the run's own (``task.json``: input shape, mean and
std; images decoded by ``data.images.load_image`` exactly as training decoded them), so
predicting a run's own test images gives its stored test logits (``predictions/test.npz``).
Probabilities follow the loss's activation (softmax, or sigmoid for sigmoid losses), never
a head-specific formula.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from softloss_cli.errors import SoftlossError

TOP = 5


@dataclass
class Predictions:
    """The outputs for a list of files (rows in input order).

    ``logits`` float32 ``[N, C]`` as the run stores them (scaled by the loss's
    ``logit_scale``); ``probs`` ``[N, C]`` by the loss's activation; ``errors`` index -> reason
    for files that could not be read (their rows of logits/probs are NaN).
    """

    paths: list[str]
    logits: object
    probs: object
    errors: dict[int, str]
    predictor: Predictor
    set_scores: object = None
    groups: list | None = None
    truths: list | None = None
    extras: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """One dict per file: ``path``, ``class``, ``prob``, ``top5`` ([(name, prob)]), ``error``;
        ordinal runs add ``expected`` and ``argmax_value``; Average-K runs ``set`` and
        ``set_size``; multi-label runs ``presence`` ({name: prob}) and ``set``."""
        import torch

        p = self.predictor
        names = p.class_names
        k = min(TOP, len(names))
        top_p, top_i = torch.nan_to_num(self.probs, nan=-1.0).topk(k, dim=1)
        expected = argmax_value = None
        if p.eval_kind == "ordinal":
            values = torch.tensor(p.values, dtype=torch.float64)
            probs64 = self.probs.to(torch.float64)
            expected = (probs64 / probs64.sum(dim=1, keepdim=True)) @ values
            argmax_value = values[torch.nan_to_num(self.probs, nan=-1.0).argmax(dim=1)]
        in_set = None
        if p.eval_kind == "multilabel":
            in_set = self.probs >= 0.5
        elif p.avgk_threshold is not None and self.set_scores is not None:
            in_set = self.set_scores.to(torch.float64) >= p.avgk_threshold
        rows = []
        for i, path in enumerate(self.paths):
            if i in self.errors:
                rows.append({"path": path, "error": self.errors[i]})
                continue
            row = {"path": path, "class": names[int(top_i[i, 0])], "prob": float(top_p[i, 0]),
                   "top5": [(names[int(j)], float(q)) for j, q in zip(top_i[i], top_p[i])]}
            if expected is not None:
                row["expected"] = float(expected[i])
                row["argmax_value"] = float(argmax_value[i])
            if p.eval_kind == "multilabel":
                row["presence"] = {n: float(q) for n, q in zip(names, self.probs[i])}
            if in_set is not None:
                members = [names[j] for j in in_set[i].nonzero().squeeze(1).tolist()]
                row["set"] = members
                row["set_size"] = len(members)
            row["error"] = None
            rows.append(row)
        return rows

    def group_rows(self, group_size: int | None = None) -> list[dict]:
        """Sums of expected and argmax values per group (ordinal runs): consecutive groups of
        ``group_size`` files in input order, else the groups given with the inputs (a
        manifest's ``group`` column). Unreadable files are left out of their group's sums and
        counted in ``unreadable``; ``true_sum`` when every member has a numeric label."""
        if self.predictor.eval_kind != "ordinal":
            raise SoftlossError("group sums need an ordinal run (expected values); this run is "
                                f"{self.predictor.eval_kind}")
        if group_size is not None:
            keys = [str(i // group_size + 1) for i in range(len(self.paths))]
        elif self.groups is not None:
            keys = self.groups
        else:
            return []
        rows = {r["path"]: r for r in self.rows() if r.get("error") is None}
        table: dict[str, dict] = {}
        for i, (path, key) in enumerate(zip(self.paths, keys)):
            if key is None:
                continue
            g = table.setdefault(key, {"group": key, "images": 0, "unreadable": 0, "sum_expected": 0.0,
                                       "sum_argmax": 0.0, "true_sum": 0.0})
            truth = self.truths[i] if self.truths else None
            g["true_sum"] = None if g["true_sum"] is None or truth is None else g["true_sum"] + truth
            if i in self.errors:
                g["unreadable"] += 1
                continue
            g["images"] += 1
            g["sum_expected"] += rows[path]["expected"]
            g["sum_argmax"] += rows[path]["argmax_value"]
        return list(table.values())


@dataclass
class Predictor:
    """A run's model and preprocessing, ready for ``predict(paths)``."""

    run_dir: Path
    model: object
    device: object
    precision: object
    normalize: object
    image_size: int
    channels: int
    class_names: tuple[str, ...]
    eval_kind: str
    values: tuple[float, ...]
    activation: str
    logit_scale: float
    set_source: str
    avgk_k: int | None
    avgk_threshold: float | None
    channels_last: bool = False

    def predict(self, paths, batch_size: int = 256, progress=None, strict: bool = False,
                groups=None, truths=None) -> Predictions:
        """Score every file of ``paths`` (in order). An unreadable file is an error row (or,
        with ``strict``, a ``SoftlossError`` naming it). ``progress(done, total)`` is called
        after each batch. ``groups``/``truths`` ride along for ``group_rows``."""
        import torch

        from softloss_cli.data.images import load_image
        from softloss_cli.metrics import EvalOutputs
        from softloss_cli.metrics.average_k import set_scores
        from softloss_cli.train.evaluate import as_outputs

        paths = [str(p) for p in paths]
        n, c = len(paths), len(self.class_names)
        logits = torch.full((n, c), float("nan"))
        aux = None
        errors: dict[int, str] = {}

        def decode(path):
            try:
                return load_image(path, self.image_size, self.channels), None
            except SoftlossError as exc:
                return None, str(exc)

        self.model.eval()
        with ThreadPoolExecutor(max_workers=4) as pool, torch.no_grad():
            for start in range(0, n, batch_size):
                chunk = list(pool.map(decode, paths[start:start + batch_size]))
                good = [j for j, (image, _) in enumerate(chunk) if image is not None]
                for j, (_, error) in enumerate(chunk):
                    if error is not None:
                        if strict:
                            raise SoftlossError(f"{error} (without --strict it is an error row)")
                        errors[start + j] = error
                if good:
                    x = self.normalize(torch.stack([chunk[j][0] for j in good]).to(self.device))
                    if self.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with self.precision.autocast():
                        out = as_outputs(self.model(x))
                    rows = torch.tensor(good) + start
                    logits[rows] = out["logits"].float().cpu() * self.logit_scale
                    if "aux_logits" in out:
                        if aux is None:
                            aux = torch.full((n, out["aux_logits"].shape[1]), float("nan"))
                        aux[rows] = out["aux_logits"].float().cpu()
                if progress is not None:
                    progress(min(start + batch_size, n), n)
        probs = torch.sigmoid(logits) if self.activation == "sigmoid" else torch.softmax(logits, dim=1)
        scores = None
        if self.avgk_threshold is not None:
            info = {"activation": self.activation, "set_source": self.set_source}
            outputs = EvalOutputs(logits, torch.zeros(n, dtype=torch.int64), probs,
                                  {"aux_logits": aux} if aux is not None else {}, info=info)
            scores, _ = set_scores(outputs)
        return Predictions(paths, logits, probs, errors, self, scores, groups, truths)


def _task_record(run_dir: Path) -> dict:
    path = run_dir / "task.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise SoftlossError(f"{run_dir} has no readable task.json: the run did not finish "
                            "(softloss predict needs a finished run)") from None


def load_run(run_dir, checkpoint: str | None = None, device: str = "auto", k: int | None = None) -> Predictor:
    """The run in ``run_dir`` with its ``checkpoint`` (best | last; default: the run's
    ``eval.checkpoint``, the one its metrics and predictions came from) on ``device``.

    ``k``: the Average-K set size whose validation threshold makes each image's set (default:
    the K the data declares, for Average-K runs; other multiclass runs give no set unless asked).
    """
    import torch
    from hydra.utils import instantiate

    from softloss_cli.commands.evaluate import load_run_config
    from softloss_cli.data.loaders import Normalizer
    from softloss_cli.train import checkpoint as ckpt
    from softloss_cli.train.precision import Precision, resolve_device, resolve_precision

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SoftlossError(f"{run_dir} does not exist: pass a run directory (e.g. runs/<data>-<loss>/<date>_<time>)")
    cfg, _ = load_run_config(run_dir)
    record = _task_record(run_dir)
    shape = record.get("input_shape")
    if not shape:
        raise SoftlossError(f"{run_dir}/task.json has no input_shape: the run predates softloss predict; "
                            "retrain it with this version")
    if len(shape) != 3:
        raise SoftlossError(f"{run_dir} was trained on vectors of shape {shape}, not images: predict reads image files")
    which = checkpoint or cfg.get("eval", {}).get("checkpoint", "best")
    path = run_dir / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        raise SoftlossError(f"{path} does not exist")
    dev = resolve_device(device)
    precision = Precision(resolve_precision("fp32" if dev.type == "cpu" else cfg.trainer.precision, dev), dev)
    loss_fn = instantiate(cfg.loss)
    model = instantiate(cfg.model, input_shape=list(shape), num_classes=int(record["num_classes"]))
    state = ckpt.load(path, map_location=dev)
    model.load_state_dict(state["model"])
    model.to(dev).eval()
    channels_last = dev.type == "cuda" and cfg.trainer.get("channels_last", "auto") in ("auto", True)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    names = tuple(record["class_names"])
    values = tuple(record.get("label_values") or range(len(names)))
    thresholds = record.get("avgk_thresholds") or {}
    avgk_k = k if k is not None else record.get("average_k")
    threshold = None
    if avgk_k is not None:
        if str(avgk_k) not in thresholds:
            have = ", ".join(sorted(thresholds)) or "none (not a multiclass run)"
            raise SoftlossError(f"no Average-K threshold for K={avgk_k} in {run_dir}/task.json; stored K: {have}")
        threshold = float(thresholds[str(avgk_k)])
    return Predictor(
        run_dir=run_dir, model=model, device=dev, precision=precision,
        normalize=Normalizer(record["mean"], record["std"], dev),
        image_size=int(shape[1]), channels=int(shape[0]), class_names=names,
        eval_kind=record.get("eval_kind", record.get("kind", "multiclass")), values=tuple(float(v) for v in values),
        activation=record.get("activation", getattr(loss_fn, "activation", "softmax")),
        logit_scale=float(getattr(loss_fn, "logit_scale", 1.0)), set_source=record.get("set_source", "logits"),
        avgk_k=int(avgk_k) if avgk_k is not None else None, avgk_threshold=threshold, channels_last=channels_last,
    )
