"""Process-group set-up for multi-GPU / multi-node training with ``torchrun`` (DDP).

``torchrun`` (``python -m torch.distributed.run``) starts one process per device and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. When those are present
:func:`setup` joins the process group (NCCL on CUDA, gloo on the CPU) and gives each process its device
(``cuda:LOCAL_RANK``); without them training runs in one process and every helper here is a no-op, so
the trainer has a single code path.

Division of labour across ranks (see the trainer): every rank computes its own slice of the global
batch and DDP averages the gradients, so all ranks hold identical weights after every step; logging,
validation and file writes happen on rank 0 only, with a barrier after each save so that no rank
runs ahead of a checkpoint that a resume would start from.

Multi-node: run ``torchrun --nnodes N --node_rank i --master_addr HOST ...`` on each node; the run
folder must be on a filesystem every node can read (resume loads ``last.pt`` on every rank).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from superres.devices import resolve_device
from superres.errors import SuperresError

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass
class DistContext:
    """Where this process sits: its rank among ``world_size`` processes and its torch device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    enabled: bool  # a process group was initialised by us (launched by torchrun)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, validates and writes files."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here (no-op in a single process)."""
        if self.enabled:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def from_main(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (e.g. its wall clock, so that all ranks agree on the
        learning rate and on when a time budget is spent)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return float(t.item())

    def close(self) -> None:
        """Leave the process group (after a final barrier so no rank exits while others still talk)."""
        if self.enabled and dist.is_initialized():
            self.barrier()
            dist.destroy_process_group()
            self.enabled = False


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables are present."""
    return all(v in os.environ for v in _TORCHRUN_VARS)


def setup(device_option: str) -> DistContext:
    """Pick the device and, under torchrun, join the process group.

    Under torchrun each process uses ``cuda:LOCAL_RANK`` (``train.device`` must then be ``auto``,
    ``cuda`` or ``cpu``; a fixed ``cuda:N`` would put every rank on one GPU).
    """
    base = resolve_device(device_option, option="train.device")
    if not launched_by_torchrun():
        if base.type == "cuda" and base.index is None:
            base = torch.device("cuda", torch.cuda.current_device())
        return DistContext(rank=0, world_size=1, local_rank=0, device=base, enabled=False)

    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ["LOCAL_RANK"])
    if base.type == "cuda":
        if base.index is not None and device_option != "cuda":
            raise SuperresError(
                f"train.device={device_option}: under torchrun each process uses cuda:LOCAL_RANK; set train.device to auto or cuda"
            )
        if local >= torch.cuda.device_count():
            raise SuperresError(f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} CUDA device(s)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif base.type == "cpu":
        device = base
        backend = "gloo"
    else:
        raise SuperresError(f"train.device={device_option}: distributed training supports cuda and cpu only")
    if not dist.is_initialized():
        if backend == "nccl":
            dist.init_process_group(backend=backend, device_id=device)
        else:
            dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world, local_rank=local, device=device, enabled=True)


def shard(global_batch: int, ctx: DistContext) -> range:
    """The slots ``[r*b, (r+1)*b)`` of the global batch that rank ``r`` computes (``b = batch / world``).

    DDP averages gradients over ranks, so splitting one global batch this way gives the same
    update as one process computing the whole batch (up to float summation order).
    """
    if global_batch % ctx.world_size:
        raise SuperresError(
            f"data.batch_size={global_batch} must be divisible by the number of processes ({ctx.world_size})"
        )
    per_rank = global_batch // ctx.world_size
    return range(ctx.rank * per_rank, (ctx.rank + 1) * per_rank)
