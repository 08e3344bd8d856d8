"""The training loop, top to bottom: set up, train an epoch, validate, checkpoint, log;
then evaluate the best checkpoint on val and test and write the run's files."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from softloss_cli.config.compat import check_head, check_loss_task
from softloss_cli.data import build_data
from softloss_cli.data.loaders import EpochLoader
from softloss_cli.errors import DivergedError, SoftlossError
from softloss_cli.losses import fused
from softloss_cli.metrics import compute_metrics, lower_is_better
from softloss_cli.progress import mirror_warnings, quiet
from softloss_cli.train import checkpoint as ckpt
from softloss_cli.train import distributed, preload
from softloss_cli.train.divergence import check_divergence
from softloss_cli.train.evaluate import metric_threads, predict, to_eval_outputs
from softloss_cli.train.logger import PROGRESS_MODES, Progress, RunLogger, resolved_yaml
from softloss_cli.train.precision import Precision, resolve_precision
from softloss_cli.train.preemption import Preempted, PreemptionGuard
from softloss_cli.train.run_notes import announce_data, complete_task_record, resolve_monitor
from softloss_cli.train.step import forward_loss_fn


def build_setup(cfg: DictConfig, device: torch.device):
    """Data, loss and model from the config, checked against each other (no training)."""
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    try:
        data = build_data(data_cfg, cfg.paths.data_root)
    except MemoryError:
        sizes = ", ".join(f"data.{k}={v}" for k, v in data_cfg.items() if str(k).endswith("_size"))
        raise SoftlossError(f"data={data_cfg['name']} does not fit in memory ({sizes}); reduce its sizes") from None
    loss_fn = instantiate(cfg.loss)
    check_loss_task(loss_fn, data.task, data_cfg["name"], cfg.model.get("heads", "one"))
    check_head(loss_fn, data.task, data_cfg["name"], cfg.model.get("head", "linear"))
    if hasattr(loss_fn, "bind_task"):  # e.g. ordinal losses read the dataset's label values
        try:
            loss_fn.bind_task(data.task)
        except ValueError as exc:
            raise SoftlossError(f"loss does not fit data={data_cfg['name']}: {exc}") from exc
    model = instantiate(cfg.model, input_shape=list(data.input_shape), num_classes=data.task.num_classes)
    return data, loss_fn, model.to(device)


def make_loader(cfg, data, split: str, device, shuffle=False, rank=0, world_size=1) -> EpochLoader:
    """A training loader when ``shuffle`` (this rank's share of the global ``data.batch_size``,
    last incomplete batch dropped, augmentation as configured); else an evaluation loader over
    the whole split (or this rank's in-order shard) in stored order."""
    train = shuffle
    return EpochLoader(
        data.split(split),
        batch_size=cfg.data.batch_size // world_size if train else cfg.data.eval_batch_size,
        device=device, mean=data.mean, std=data.std, shuffle=shuffle,
        drop_last=train and len(data.split(split)) > cfg.data.batch_size,
        augment=train and bool(cfg.data.augment) and data.augment_ok,
        seed=cfg.seed, rank=rank, world_size=world_size, num_workers=cfg.data.num_workers,
    )


def evaluate(model, loader, loss_fn, precision, split_name, task, channels_last, reference=None, dist=None):
    """Metrics ``{split}/{name}`` for one split, plus the raw outputs (for predictions/ and test).
    Under DDP (``dist``) the loader holds this rank's shard and the metrics are the whole split's."""
    outputs = to_eval_outputs(predict(model, loader, precision, channels_last, dist), loss_fn, loader.split, split_name)
    with metric_threads(outputs):
        metrics = compute_metrics(outputs, task, reference)
    return {f"{split_name}/{k}": v for k, v in metrics.items()}, outputs


def is_improvement(value: float, best: float | None, name: str) -> bool:
    if best is None:
        return True
    return value < best if lower_is_better(name) else value > best


def compile_backend(value) -> str:
    """``trainer.compile``: true = inductor (the default, fastest), or a backend by name
    (``aot_eager`` traces like inductor but runs eager kernels: no C++ build, a quick check)."""
    if value is True:
        return "inductor"
    if str(value) not in torch._dynamo.list_backends(exclude_tags=()):
        raise SoftlossError(f"trainer.compile must be true, false or a torch.compile backend "
                            f"(inductor, aot_eager, eager, cudagraphs...), got {value!r}")
    return str(value)


def check_run_values(cfg: DictConfig) -> None:
    """Refuse, in one line naming the key, values that are wrong for their key's type or range
    (``seed=abc``, ``trainer.epochs=0``, ``data.batch_size=0``...) before any work starts."""

    def integer(key: str, value, minimum: int | None) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SoftlossError(f"{key} must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise SoftlossError(f"{key} must be >= {minimum}, got {value}")

    integer("seed", cfg.seed, None)
    t = cfg.trainer
    integer("trainer.epochs", t.epochs, 1)
    integer("trainer.log_every", t.log_every, 1)
    if t.get("threads") is not None:
        integer("trainer.threads", t.threads, 1)
    integer("data.batch_size", cfg.data.batch_size, 1)
    if cfg.data.get("eval_batch_size") is not None:
        integer("data.eval_batch_size", cfg.data.eval_batch_size, 1)
    if t.progress not in PROGRESS_MODES:
        raise SoftlossError(f"trainer.progress must be one of {', '.join(PROGRESS_MODES)}, got {t.progress!r}")
    if t.get("fused_loss", "auto") not in fused.MODES:
        raise SoftlossError(f"trainer.fused_loss must be one of {', '.join(fused.MODES)}, got {t.fused_loss!r}")
    lr = cfg.optim.get("lr", 0.0)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
        raise SoftlossError(f"optim.lr must be a finite number >= 0, got {lr!r}")
    clip = t.get("grad_clip")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0):
        raise SoftlossError(f"trainer.grad_clip must be null or a number > 0, got {clip!r}")


def fit(cfg: DictConfig, run_dir: Path, on_start=None, guard: PreemptionGuard | None = None) -> dict[str, float]:
    """Train as ``cfg`` says, in ``run_dir``; return the final metrics (also in metrics.json).

    Everything that can refuse the run (config values, data, model, the checkpoint to resume
    and its config, the monitored metric) is checked before ``on_start()`` is called and before
    the first file is written: a refused run changes nothing. SIGTERM/SIGUSR1 save a checkpoint
    at the next step boundary and raise ``Preempted`` while ``guard`` (a ``PreemptionGuard``
    entered by the caller) is active.
    """
    guard = guard if guard is not None else PreemptionGuard()  # not entered: never requested
    mirror_warnings()  # train.log holds what the terminal showed, warnings included
    check_run_values(cfg)
    t = cfg.trainer
    if t.get("threads"):
        torch.set_num_threads(int(t.threads))
    fused.set_mode(t.get("fused_loss", "auto"))
    backend = compile_backend(t.compile) if t.compile else None  # checked before any work
    dist = distributed.setup(t.get("strategy", "single"), t.device)
    device = dist.device
    # Rank 0's run dir for every rank: one set of outputs even if ${now:} resolved a second apart.
    run_dir = Path(dist.all_objects(str(run_dir))[0])
    precision = Precision(resolve_precision(t.precision, device), device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not t.get("deterministic", False)
    ckpt.seed_everything(cfg.seed)
    with contextlib.nullcontext() if dist.is_main and t.progress != "none" else quiet():
        data, loss_fn, model = build_setup(cfg, device)
    if getattr(loss_fn, "clip_advice", None) and not cfg.trainer.grad_clip:
        import warnings

        warnings.warn(f"loss={getattr(loss_fn, 'registry_name', type(loss_fn).__name__)} without gradient clipping: "
                      f"{loss_fn.clip_advice}; add trainer.grad_clip=1.0", stacklevel=1)
    task = data.task
    if t.get("sync_bn"):
        model = dist.sync_bn(model)
    channels_last = (t.channels_last == "auto" and device.type == "cuda" and len(data.input_shape) == 3) or t.channels_last is True
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    dist.per_rank_batch(cfg.data.batch_size)  # refuses a global batch that does not split evenly
    shard = {"rank": dist.rank, "world_size": dist.world_size}
    train_loader = make_loader(cfg, data, "train", device, shuffle=True, **shard)
    val_loader = make_loader(cfg, data, "val", device, **shard)
    optimizer = instantiate(cfg.optim, params=model.parameters())
    steps_per_epoch = len(train_loader)
    scheduler = instantiate(cfg.sched, optimizer=optimizer, total_steps=t.epochs * steps_per_epoch)
    monitor = resolve_monitor(t.monitor, task)

    ckpt_dir = run_dir / "checkpoints"
    start_epoch, step, best = 0, 0, None
    in_epoch, first_loss = {}, None  # where a preempted epoch stopped; the divergence check's reference
    val_cache = {}  # the val (metrics, outputs) of best.pt and last.pt, if computed here: not computed twice
    if t.resume:
        state = ckpt.load_for_resume(ckpt_dir / "last.pt", map_location=device)
        _check_resume_config(state, cfg, run_dir)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        precision.scaler.load_state_dict(state["scaler"])
        if "loss" in state:  # a loss's running state (two_head's running threshold); older checkpoints lack it
            loss_fn.load_state_dict(state["loss"])
        ranks = state.get("rng_ranks", [])
        ckpt.set_rng_state(ranks[dist.rank] if len(ranks) == dist.world_size else state["rng"])
        start_epoch, step, best = state["epoch"] + 1, state["step"], state["best"]
        first_loss, in_epoch = state.get("first_loss"), state.get("in_epoch", {})
        if in_epoch:  # a mid-epoch (preemption) checkpoint: the rest of that epoch comes first
            start_epoch = state["epoch"]
    elif dist.rank:
        torch.manual_seed(cfg.seed + 1_000_003 * dist.rank)  # own dropout/noise draws; DDP syncs the weights
    # DDP trains through a wrapper; compiled after loading weights (as timm does), around the DDP
    # wrapper (so its buckets follow the graph). Checkpoints keep the plain module's keys.
    unused_aux_head = getattr(model, "aux_head", None) is not None and not getattr(loss_fn, "needs_aux", False)
    train_model = dist.wrap(model, find_unused=unused_aux_head)
    # trainer.compile compiles the model and the loss together (train/step.py).
    forward_loss, train_model = forward_loss_fn(train_model, loss_fn, precision, backend, dist.distributed)

    if t.monitor != "auto":  # a name the task will not produce: refused now, not after the first epoch
        check_monitor(monitor, evaluate(model, val_loader, loss_fn, precision, "val", task, channels_last, dist=dist)[0])
    if on_start is not None:
        on_start()
    if dist.is_main:  # the first lines of train.log: written once the run may start
        announce_data(data, run_dir, monitor, t.monitor)
    config_yaml = OmegaConf.to_yaml(cfg)  # once: every last.pt (TensorBoard shows it resolved)
    if dist.is_main:
        logger = RunLogger(run_dir, resolved_yaml(cfg), resume_step=step if t.resume else None, start_epoch=start_epoch,
                           data_name=cfg.data.name)
    else:
        logger = distributed.NullLogger()
    progress = Progress(t.progress if dist.is_main else "none")
    if dist.is_main:
        preload.start()  # the end of the run's imports (figures), while the epochs train
    log_every = max(1, int(t.log_every))

    def training_state(epoch: int, position: dict | None = None) -> dict:
        """Everything a resume needs; ``position``: where in ``epoch`` a preempted run stopped."""
        rng = dist.all_objects(ckpt.rng_state())  # every rank's generators: a resumed run draws on as before
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": precision.scaler.state_dict(), "loss": loss_fn.state_dict(), "rng": rng[0],
            "epoch": epoch, "step": step, "best": best, "monitor": monitor, "first_loss": first_loss,
            **({"rng_ranks": rng} if dist.distributed else {}), **({"in_epoch": position} if position else {}),
            "config": config_yaml,
        }

    def preempted(epoch: int, position: dict | None = None) -> Preempted:
        """Save where training stands (rank 0 writes) and say so."""
        state = training_state(epoch, position)
        if dist.is_main:
            ckpt.save_atomic(state, ckpt_dir / "last.pt", keep_previous=True)
        where = f"epoch {epoch + 1}, step {step}" + (f" ({position['batches']}/{steps_per_epoch} of the epoch)" if position else "")
        return Preempted(f"preempted by {guard.name()} at {where}; checkpoint saved to {ckpt_dir / 'last.pt'}; "
                         f"continue with trainer.resume=true", guard.signum, epoch, step, guard.previous_handler())

    try:
        for epoch in range(start_epoch, t.epochs):
            loss_fn.on_epoch_start(epoch, t.epochs)
            if hasattr(model, "on_epoch_start"):
                model.on_epoch_start(epoch, t.epochs)
            train_loader.set_epoch(epoch)
            train_model.train()
            progress.start_epoch(epoch, t.epochs, steps_per_epoch)
            epoch_t0, seen = time.perf_counter(), 0
            loss_sum = torch.zeros((), device=device)
            window_sum, window_n = torch.zeros((), device=device), 0
            nonfinite = torch.zeros((), dtype=torch.bool, device=device)
            skip, stop = (in_epoch.get("batches", 0) if epoch == start_epoch else 0), False
            if skip:  # the sums of the preempted epoch's first batches, as they stood
                loss_sum, window_sum = in_epoch["loss_sum"].to(device), in_epoch["window_sum"].to(device)
                window_n, seen = in_epoch["window_n"], in_epoch["seen"]
            for i, batch in enumerate(train_loader):
                if i < skip:  # drawn (order, augmentation) but already trained on before the preemption
                    continue
                x = batch.inputs.contiguous(memory_format=torch.channels_last) if channels_last else batch.inputs
                loss = forward_loss(x, batch.targets)
                optimizer.zero_grad(set_to_none=True)
                precision.scaler.scale(loss).backward()
                if t.grad_clip:
                    precision.scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                precision.scaler.step(optimizer)
                precision.scaler.update()
                scheduler.step()
                step += 1
                seen += len(batch.targets)
                detached = loss.detach()
                nonfinite |= ~torch.isfinite(detached)
                loss_sum += detached
                window_sum += detached
                window_n += 1
                # The only host syncs of the step loop: every log_every steps and at the epoch's end;
                # under DDP one all-reduce there, so that all ranks see the same loss and stop together.
                stop = guard.requested and not dist.distributed  # under DDP: agreed on at the next sync below
                if (i + 1) % log_every == 0 or i + 1 == steps_per_epoch:
                    flags = torch.stack([window_sum / window_n, nonfinite.float(),
                                         torch.tensor(float(guard.requested), device=device)])
                    window_loss, diverged, stop_any = dist.mean(flags).tolist()
                    stop = stop or stop_any > 0
                    if diverged:
                        raise DivergedError(
                            f"non-finite loss at epoch {epoch + 1}, step {step}; the last good checkpoint is "
                            f"{ckpt_dir / 'last.pt' if epoch > 0 else 'none (first epoch)'}"
                        )
                    parts = {f"train/{k}": v.item() for k, v in loss_fn.last_parts.items() if v.ndim == 0}
                    logger.scalars({"train/loss": window_loss, "train/lr": optimizer.param_groups[0]["lr"], **parts}, step)
                    progress.update(i + 1, window_loss, seen * dist.world_size / (time.perf_counter() - epoch_t0))
                    window_sum.zero_()
                    window_n = 0
                if stop and i + 1 < steps_per_epoch:
                    raise preempted(epoch, {"batches": i + 1, "loss_sum": loss_sum, "window_sum": window_sum,
                                            "window_n": window_n, "seen": seen})

            train_loss = dist.mean(loss_sum / steps_per_epoch).item()
            dist.sync_buffers(model)  # every rank evaluates (and rank 0 saves) rank 0's BatchNorm statistics
            val_metrics, val_out = evaluate(model, val_loader, loss_fn, precision, "val", task, channels_last, dist=dist)
            epoch_time = time.perf_counter() - epoch_t0
            images_per_s = seen * dist.world_size / epoch_time
            values = {"train/epoch_loss": train_loss, "train/images_per_s": images_per_s, **val_metrics}
            logger.epoch(epoch, step, values)
            check_monitor(monitor, val_metrics)
            first_loss = check_divergence(values, first_loss, epoch, t.get("diverge_factor"), t.get("diverge_limit"),
                                          str(ckpt_dir / "best.pt") if best is not None else "none (first epoch)")
            improved = is_improvement(val_metrics[monitor], best, monitor)
            val_cache["last"] = (val_metrics, val_out)
            if improved:
                best = val_metrics[monitor]
                val_cache["best"] = val_cache["last"]
            state = training_state(epoch)
            if dist.is_main:
                if improved:
                    ckpt.save_atomic({"model": state["model"], "epoch": epoch, "monitor": monitor, "best": best}, ckpt_dir / "best.pt")
                ckpt.save_atomic(state, ckpt_dir / "last.pt", keep_previous=True)
            progress.end_epoch({"loss": train_loss, monitor: val_metrics[monitor], "img/s": images_per_s})
            if (stop or guard.requested) and epoch + 1 < t.epochs:  # last.pt is this epoch's end: nothing more to save
                raise Preempted(f"preempted by {guard.name()} at the end of epoch {epoch + 1}, step {step}; checkpoint "
                                f"saved to {ckpt_dir / 'last.pt'}; continue with trainer.resume=true", guard.signum,
                                epoch, step, guard.previous_handler())

        dist.barrier()  # rank 0 has written the checkpoints the final evaluation reads
        which = cfg.get("eval", {}).get("checkpoint", "best")
        metrics, outputs = final_evaluation(cfg, data, model, loss_fn, precision, run_dir, channels_last, device,
                                            dist=dist, val_cache=val_cache.get(which))
        logger.finish(cfg, metrics, outputs, data.task, step)
        if dist.is_main:
            complete_task_record(run_dir, data, loss_fn, outputs, monitor)
        dist.close()
        return metrics
    finally:
        logger.close()


def check_monitor(monitor: str, val_metrics: dict[str, float]) -> None:
    """``trainer.monitor`` must name one of the validation metrics the run produces."""
    if monitor not in val_metrics:
        raise SoftlossError(f"trainer.monitor={monitor} is not a validation metric of this run; choose one of: "
                            f"{', '.join(sorted(val_metrics))}")


def _check_resume_config(state: dict, cfg: DictConfig, run_dir: Path) -> None:
    """Refuse to resume with another config than the run's (other data, loss, lr...): the
    weights would train on silently under other settings, or fail to load. Checked before
    anything is written (softloss writes ``.hydra/`` itself, once the run may start)."""
    if "config" not in state:  # an older checkpoint: nothing to compare with
        return
    differ = ckpt.config_differences(state["config"], cfg)
    if not differ:
        return
    shown = "; ".join(differ[:3]) + (f"; and {len(differ) - 3} more" if len(differ) > 3 else "")
    raise SoftlossError(f"trainer.resume=true with another config than the run's ({shown}); resume with the "
                        f"run's overrides ({run_dir / '.hydra' / 'overrides.yaml'}) plus trainer.resume=true "
                        f"(only {', '.join(ckpt.RESUME_MAY_CHANGE)} may change)")


def final_evaluation(cfg, data, model, loss_fn, precision, run_dir: Path, channels_last, device,
                     dist=None, val_cache=None):
    """Best checkpoint on val and test: ``metrics.json`` and ``predictions/{val,test}.npz``.

    For a partial task (negative labels) the training split is scored too, against its
    partial targets (``train/neg_violation_rate``...), with the last checkpoint: those
    metrics describe the end of training. ``val_cache``: the (metrics, outputs)
    the loop already computed on val with these very weights; they are reused instead of a
    second pass (on the CPU a pass gives the same bits, so a resumed run that recomputes
    them ends identical). Under DDP (``dist``) every rank evaluates its shard and only rank 0
    writes. Returns (metrics, {split: EvalOutputs}).
    """
    dist = dist or distributed.DistEnv("single", device)
    shard = {"rank": dist.rank, "world_size": dist.world_size}
    which = cfg.get("eval", {}).get("checkpoint", "best")
    state = ckpt.load(run_dir / "checkpoints" / f"{which}.pt", map_location=device)
    model.load_state_dict(state["model"])
    if val_cache is None:
        val_cache = evaluate(model, make_loader(cfg, data, "val", device, **shard), loss_fn, precision, "val",
                             data.task, channels_last, dist=dist)
    val_metrics, val_out = val_cache
    test_metrics, test_out = evaluate(model, make_loader(cfg, data, "test", device, **shard), loss_fn, precision, "test",
                                      data.task, channels_last, reference=val_out, dist=dist)
    metrics = {**val_metrics, **test_metrics}
    if data.task.kind == "partial":
        metrics.update(partial_train_metrics(cfg, data, model, loss_fn, precision, channels_last, device,
                                             run_dir / "checkpoints" / "last.pt", which, dist))
    if dist.is_main:
        write_predictions(run_dir / "predictions", {"val": val_out, "test": test_out},
                          {s: getattr(data.split(s), "paths", None) for s in ("val", "test")})
        tmp = run_dir / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        tmp.replace(run_dir / "metrics.json")
    return metrics, {"val": val_out, "test": test_out}


def partial_train_metrics(cfg, data, model, loss_fn, precision, channels_last, device, last_pt: Path, which: str,
                          dist=None) -> dict[str, float]:
    """``train/*`` metrics of a partial task: the training split scored against its partial
    targets (``train/neg_violation_rate``...) with the weights at the end of training
    (``last_pt``, loaded into ``model`` unless ``which`` is already ``'last'``), whichever
    checkpoint val/test are scored with: they describe what the model learnt from "not l".
    Shared by ``final_evaluation`` and ``softloss eval``; under DDP each rank scores its shard."""
    if which != "last":
        model.load_state_dict(ckpt.load(last_pt, map_location=device)["model"])
    shard = {"rank": dist.rank, "world_size": dist.world_size} if dist is not None else {}
    train_out = to_eval_outputs(predict(model, make_loader(cfg, data, "train", device, **shard), precision,
                                        channels_last, dist), loss_fn, data.train, "train")
    return {f"train/{k}": v for k, v in compute_metrics(train_out, data.task, kind="partial").items()}


def write_predictions(folder: Path, outputs: dict, paths: dict | None = None) -> None:
    """``{split}.npz`` with ``logits`` (float32 [N, C], as seen by the loss's activation),
    ``targets``, every auxiliary output (``aux_logits``...) under its own name, and, for
    datasets of image files, ``paths`` (the file of each row: ``softloss predict`` maps back)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, out in outputs.items():
        arrays = {"logits": out.logits.numpy().astype(np.float32), "targets": out.targets.numpy()}
        arrays.update({k: v.numpy() for k, v in out.aux.items()})
        files = (paths or {}).get(split)
        if files is not None and len(files) == len(out.logits):
            arrays["paths"] = np.array([os.path.abspath(f) for f in files])
        np.savez_compressed(folder / f"{split}.npz", **arrays)
