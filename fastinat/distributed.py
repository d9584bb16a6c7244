"""Data-parallel training over processes, GPUs and machines, started by torchrun or accelerate.

    torchrun --nproc_per_node 4 -m fastinat scratch --data data/inaturalist_12K
    torchrun --nnodes 2 --node_rank 0 --master_addr 10.0.0.1 --master_port 29500 \\
        --nproc_per_node 8 -m fastinat finetune --arch resnet50
    accelerate launch -m fastinat scratch ...

The launcher sets RANK / WORLD_SIZE / LOCAL_RANK; `init()` joins the process group (NCCL on
GPUs, gloo on CPUs, so the same path runs on a laptop and in the tests). `DistributedTraining`
wraps the model in DistributedDataParallel and the training loader in `ShardedDL`: every
epoch rank 0 shuffles, broadcasts the order, and each rank takes its own contiguous slice
(disjoint shards, the last padded with the first indices to equal length, as fastai does;
`--bs` is per process, so the global batch is bs x processes). Validation is not sharded: every rank evaluates the
whole validation split, so every rank gets the same metrics (and takes the same early-stopping
decision) without gathering; the training loss is averaged over all ranks. Only rank 0 writes
the run folder, W&B, progress and the final report.

fastai's own `DistributedDL` broadcasts its order through CUDA tensors and its
`DistributedTrainer` relies on accelerate's device placement; neither works with CPU
processes, hence these two small classes.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist
from fastai.callback.core import Callback
from fastai.distributed import DistributedDL
from torch import nn

from .errors import FastinatError, UsageError


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name}={value!r} is not a whole number (the launcher sets it: "
                         "start with torchrun or accelerate launch).") from None


def world_size() -> int:
    return _env_int("WORLD_SIZE", 1)


def rank() -> int:
    return _env_int("RANK", 0)


def local_rank() -> int:
    return _env_int("LOCAL_RANK", 0)


def local_world_size() -> int:
    return _env_int("LOCAL_WORLD_SIZE", world_size())


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def _backend_device() -> str:
    return "cuda" if dist.get_backend() == "nccl" else "cpu"


def init() -> torch.device | None:
    """Join the launcher's process group (once); the device this process trains on.

    Raises:
        UsageError: the launcher's variables are missing or wrong. FastinatError: the
            process group cannot be reached.
    """
    if not is_distributed():
        return None
    cuda = torch.cuda.is_available()
    if cuda:
        if local_rank() >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK={local_rank()} but this machine has {torch.cuda.device_count()} "
                             "GPU(s): start at most one process per GPU (--nproc_per_node).")
        torch.cuda.set_device(local_rank())
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend="nccl" if cuda else "gloo")
        except ValueError as e:  # the launcher's variables are missing or wrong
            raise UsageError(f"Cannot join the distributed run ({e}); start it with torchrun or "
                             "accelerate launch.") from None
        except RuntimeError as e:  # rendezvous timeout, unreachable master, NCCL failure
            raise FastinatError(f"Cannot join the distributed run ({str(e).splitlines()[0]}).") from None
    return torch.device("cuda", local_rank()) if cuda else torch.device("cpu")


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast(obj):
    """`obj` from rank 0, on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(*values: float) -> list[float]:
    """Element-wise sums of `values` over all ranks."""
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_backend_device())
    dist.all_reduce(t)
    return t.cpu().tolist()


@contextmanager
def rank0_first():
    """Rank 0 runs the block first (filling caches); the other ranks then run it in parallel."""
    if is_distributed() and not is_main():
        barrier()
    try:
        yield
    finally:
        if is_distributed() and is_main():
            barrier()


class ShardedDL(DistributedDL):
    """fastai's DistributedDL, with the shuffled order broadcast on the process group's device."""

    def _broadcast(self, t, rank):
        t = torch.tensor(t, dtype=torch.long, device=_backend_device())
        dist.broadcast(t, rank)
        return t.cpu().tolist()


class DistributedTraining(Callback):
    """DistributedDataParallel for the model, `ShardedDL` for the training loader, during fit.

    DDP only syncs the parameters that train when it is built, so the wrapper is rebuilt when
    the trainable set changes (gradual unfreezing). `find_unused` suits backbones with
    parameters the forward pass skips (a timm model's unused head norm).
    """

    order = 11  # after TrainEvalCallback has set learn.dl, before the progress callbacks

    def __init__(self, sync_bn: bool = True, find_unused: bool = False):
        self.sync_bn, self.find_unused = sync_bn, find_unused

    def _wrap(self) -> None:
        cuda = next(self.base.parameters()).is_cuda
        self.trainable = [p.requires_grad for p in self.base.parameters()]
        self.learn.model = nn.parallel.DistributedDataParallel(
            self.base, device_ids=[local_rank()] if cuda else None, find_unused_parameters=self.find_unused)

    def before_fit(self) -> None:
        self.base = self.learn.model
        if next(self.base.parameters()).is_cuda and self.sync_bn:
            self.base = nn.SyncBatchNorm.convert_sync_batchnorm(self.base)
        self._wrap()

    def before_epoch(self) -> None:
        if [p.requires_grad for p in self.base.parameters()] != self.trainable:
            self._wrap()

    def before_train(self) -> None:
        if not isinstance(self.learn.dl, ShardedDL):
            self.learn.dl = ShardedDL(self.learn.dl)

    def after_fit(self) -> None:
        self.learn.model = unwrap(self.learn.model)


def to_detach_local(b, cpu: bool = True, gather: bool = True):
    """fastai's `Learner.to_detach` without the all-gather: metrics stay per process (each
    rank validates the whole split), and rank 0's final evaluation runs alone."""
    from fastai.torch_core import to_detach

    return to_detach(b, cpu, gather=False)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
