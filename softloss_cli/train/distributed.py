"""Several processes, one run: DistributedDataParallel under torchrun (or Slurm), in small pieces
the loop calls. With ``trainer.strategy=single`` every method is a no-op and nothing of
``torch.distributed`` is touched, so the single-process path stays exactly what it was.

How a DDP run works (``trainer.strategy=ddp``):

- The launcher starts one process per device: ``torchrun`` sets ``RANK``, ``LOCAL_RANK``,
  ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``; under Slurm (the submitit launcher, one task
  per GPU) they are derived from ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NTASKS`` and the
  job's first node. The process group uses NCCL on CUDA, gloo on the CPU.
- ``data.batch_size`` is the *global* batch: each rank takes ``batch_size / world_size`` rows,
  so the same config trains with the same hyper-parameters on 1 or N devices. Rank ``r`` takes
  positions ``r, r + W, r + 2W...`` of the epoch's shuffled order (the order depends only on
  (seed, epoch)), so the N per-rank batches of one step are exactly the global batch one process
  would take. BatchNorm statistics are per rank unless ``trainer.sync_bn=true`` (CUDA only).
- Evaluation shards each split in stored order (rank r: positions r, r + W...), gathers every
  rank's outputs, restores the stored order and drops the padding, so metrics that need the
  whole split (QWK, the Average-K threshold) see exactly what one process would.
- Only rank 0 writes: TensorBoard, ``history.jsonl``, checkpoints, ``metrics.json``,
  ``predictions/``. Every rank computes the (identical) metrics, so decisions such as "is this
  the best epoch" or "the loss diverged" are taken by all ranks together, never by one alone.
"""

from __future__ import annotations

import atexit
import datetime
import os
import re
from dataclasses import dataclass, field

import torch

from softloss_cli.errors import SoftlossError
from softloss_cli.train.precision import resolve_device

STRATEGIES = ("single", "ddp")


def launcher_env() -> dict[str, int] | None:
    """``{rank, local_rank, world_size}`` from torchrun's variables, or from Slurm's when a job
    runs several tasks (then ``MASTER_ADDR``/``MASTER_PORT``/``RANK``... are exported for
    ``init_process_group``); None when no launcher started this process."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return {"rank": int(env["RANK"]), "local_rank": int(env.get("LOCAL_RANK", 0)), "world_size": int(env["WORLD_SIZE"])}
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
        env.setdefault("MASTER_ADDR", first_host(nodes) if nodes else "127.0.0.1")
        # One port per job (as submitit does), so two jobs sharing a node do not collide.
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
        info = {"rank": int(env["SLURM_PROCID"]), "local_rank": int(env.get("SLURM_LOCALID", 0)),
                "world_size": int(env["SLURM_NTASKS"])}
        env.update(RANK=str(info["rank"]), LOCAL_RANK=str(info["local_rank"]), WORLD_SIZE=str(info["world_size"]))
        return info
    return None


def first_host(nodelist: str) -> str:
    """The first host name of a Slurm node list: ``gpu[07-09,12],cpu1`` -> ``gpu07``."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise SoftlossError(f"cannot read the Slurm node list {nodelist!r}; set MASTER_ADDR")
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + re.split(r"[-,]", ranges)[0]


def interleave(parts: list[torch.Tensor], n: int) -> torch.Tensor:
    """Undo the in-order shard: ``parts[r]`` holds positions ``r, r + W, ...`` (each padded to
    the same length); returns the ``n`` rows in stored order: row ``i`` is ``parts[i % W][i // W]``."""
    return torch.stack(parts, dim=1).flatten(0, 1)[:n]


@dataclass
class DistEnv:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    strategy: str
    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    _pg: object = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.strategy == "ddp"

    def per_rank_batch(self, global_batch: int) -> int:
        if global_batch % self.world_size:
            raise SoftlossError(
                f"data.batch_size={global_batch} (the global batch) must be divisible by the "
                f"{self.world_size} processes of this DDP run")
        return global_batch // self.world_size

    def wrap(self, model: torch.nn.Module, find_unused: bool = False) -> torch.nn.Module:
        """The model DDP trains (the plain model is kept for evaluation and checkpoints).

        ``find_unused``: some parameters get no gradient in a step (a second head that the
        loss does not read, e.g. the Average-K preset's ``model.heads=two`` with ``loss=ce``);
        DDP must then look for them after each backward or it stops waiting for their grads.
        """
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)

    def sync_bn(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.distributed or self.device.type != "cuda":
            raise SoftlossError("trainer.sync_bn=true needs trainer.strategy=ddp on CUDA devices "
                                "(torch's SyncBatchNorm has no CPU kernel)")
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean over ranks (one all-reduce); the tensor itself in a single process."""
        if not self.distributed:
            return values
        import torch.distributed as dist

        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values / self.world_size

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def all_objects(self, obj) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank (small objects: strings, RNG states).

        Sent as ``torch.save`` bytes and read back with ``weights_only=True``: pickled tensors
        do not survive ``all_gather_object`` on every torch version.
        """
        if not self.distributed:
            return [obj]
        import io

        import torch.distributed as dist

        buf = io.BytesIO()
        torch.save(obj, buf)
        out = [None] * self.world_size
        dist.all_gather_object(out, buf.getvalue())
        return [torch.load(io.BytesIO(b), weights_only=True) for b in out]

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank, so that every shard of
        an evaluation sees the model rank 0 checkpoints. DDP broadcasts them before each training
        forward, but each rank then updates its copy from its own last batch."""
        if not self.distributed:
            return
        import torch.distributed as dist

        for buf in model.buffers():
            dist.broadcast(buf, src=0)

    def gather_outputs(self, pred: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        """Every rank's evaluation outputs (on the device) joined in the split's stored order.

        ``pred`` holds this rank's rows (positions ``rank, rank + W, ...`` of ``n``). The names,
        dtypes and trailing shapes are agreed first, since a rank may have no rows at all.
        """
        if not self.distributed:
            return pred
        import torch.distributed as dist

        schemas = self.all_objects({k: (str(v.dtype), tuple(v.shape[1:])) for k, v in pred.items()} if pred else None)
        schema = next((s for s in schemas if s), None)
        if schema is None:
            return pred
        rows = -(-n // self.world_size)
        out = {}
        for name in sorted(schema):  # the same order on every rank: collectives must match
            dtype, shape = getattr(torch, schema[name][0].removeprefix("torch.")), schema[name][1]
            t = pred.get(name, torch.empty((0, *shape), dtype=dtype, device=self.device))
            t = torch.cat([t, t.new_zeros((rows - len(t), *shape))]) if len(t) < rows else t
            wire = t.to(torch.uint8) if t.dtype == torch.bool else t  # gloo has no bool all_gather
            parts = [torch.empty_like(wire) for _ in range(self.world_size)]
            dist.all_gather(parts, wire.contiguous())
            joined = interleave(parts, n)
            out[name] = joined.bool() if t.dtype == torch.bool else joined
        return out

    def close(self) -> None:
        """The end of a run: every rank waits for rank 0's last files. The process group stays
        (the next job of a multirun reuses it) and is destroyed when the process exits."""
        self.barrier()


def setup(strategy: str, device_name: str, timeout_s: float = 1800) -> DistEnv:
    """Check ``trainer.strategy`` against how the process was launched; join the process group."""
    if strategy not in STRATEGIES:
        raise SoftlossError(f"trainer.strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    launched = launcher_env() if strategy == "ddp" else None
    if strategy == "single":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            raise SoftlossError(f"this process is one of {world} started by torchrun but trainer.strategy=single "
                                f"(each would train the same run); add trainer.strategy=ddp, or start one process")
        return DistEnv("single", resolve_device(device_name))
    if launched is None:
        raise SoftlossError(
            "trainer.strategy=ddp needs one process per device started by a launcher: "
            "torchrun --nproc_per_node=N -m softloss_cli train ... (or hydra/launcher=submitit_slurm)")
    import torch.distributed as dist

    device = resolve_device(device_name)
    if device.type == "cuda":
        if launched["local_rank"] >= torch.cuda.device_count():
            raise SoftlossError(f"local rank {launched['local_rank']} has no GPU: this node has "
                                f"{torch.cuda.device_count()}; start at most that many processes per node")
        device = torch.device("cuda", launched["local_rank"])
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
        atexit.register(_destroy)
    return DistEnv("ddp", device, launched["rank"], launched["local_rank"], dist.get_world_size())


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


class NullLogger:
    """What ranks other than 0 log: nothing (same methods as ``RunLogger``)."""

    def scalars(self, *args, **kwargs) -> None:
        pass

    def epoch(self, *args, **kwargs) -> None:
        pass

    def finish(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def is_main_process() -> bool:
    """Rank 0, or a process no launcher started: for code outside the loop (status, summaries)."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"]) == 0
    if int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env.get("SLURM_PROCID", "0")) == 0
    return True
