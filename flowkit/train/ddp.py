"""DistributedDataParallel training pieces: each rank's part of the global batches, a batch norm
that synchronises across ranks on the CPU too, and the model wrapper.

The batch size of a run (``--batch-size``) is the global batch: clips per optimiser step, all ranks
together. :class:`DistributedBatchSampler` cuts each of the batches :class:`EpochBatchSampler` makes
for (seed, epoch) into ``world_size`` equal consecutive parts, rank ``r`` taking part ``r``. The
dataset draws each clip from (seed, epoch, index), so an N-rank run sees exactly the clips of a
1-rank run with the same global batch; DDP averages the gradients of the equal parts, which is the
gradient of the global batch's mean loss. Batch norm computes statistics per rank unless
``--sync-bn``: :func:`convert_sync_batchnorm` (torch's ``SyncBatchNorm`` on CUDA, which supports
only GPUs, :class:`CPUSyncBatchNorm` on the CPU). The state dicts are those of the plain model
(batch-norm keys unchanged), so a checkpoint of an N-rank run loads into a 1-rank evaluation.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import distributed
from ..errors import FlowkitError
from .loading import EpochBatchSampler, resolve_device


def rank_device(name: str) -> torch.device:
    """The device of this rank: ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` under torchrun."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return resolve_device(distributed.local_device(name))


class DistributedBatchSampler(EpochBatchSampler):
    """Rank ``rank``'s ``batch_size / world_size`` clips of every global batch of
    :class:`EpochBatchSampler` ``(size, batch_size, seed)``; ``set_epoch`` / ``skip`` as there.

    Every rank runs the same number of steps. FlowkitError when ``batch_size`` is not a multiple
    of ``world_size`` or the dataset is smaller than one global batch (parts would be unequal).
    """

    def __init__(self, size: int, batch_size: int, *, rank: int, world_size: int, seed: int = 0,
                 shuffle: bool = True):
        check_batches(size, batch_size, world_size)
        super().__init__(size, batch_size, seed=seed, shuffle=shuffle, drop_last=True)
        self.rank, self.world_size = int(rank), int(world_size)
        self.part = batch_size // world_size

    def batches(self) -> list[list[int]]:
        lo = self.rank * self.part
        return [batch[lo:lo + self.part] for batch in super().batches()]


def check_batches(size: int, batch_size: int, world_size: int, *, resuming: bool = False) -> None:
    """FlowkitError when ``world_size`` ranks cannot share the global batches of ``batch_size``
    clips over ``size`` training videos (``batch_size`` not a multiple of ``world_size``, or
    fewer videos than one global batch). A resumed run keeps its batch size (--batch-size is
    refused there), so its fix is another number of ranks."""
    if world_size == 1:
        return
    if batch_size % world_size:
        if resuming:
            divisors = [str(n) for n in range(1, batch_size + 1) if batch_size % n == 0]
            counts = " or ".join(filter(None, [", ".join(divisors[:-1]), divisors[-1]]))
            raise FlowkitError(f"the run's batch of {batch_size} clips cannot be split over "
                               f"{world_size} ranks; resume with a number of ranks that divides "
                               f"{batch_size}: {counts}")
        raise FlowkitError(f"--batch-size {batch_size} (clips per step, all ranks together) "
                           f"must be a multiple of the {world_size} ranks")
    if size < batch_size:
        fix = ("resume in one process (one rank trains on a short batch)" if resuming else
               "lower --batch-size or train in one process")
        raise FlowkitError(f"{size} training videos are fewer than one global batch of "
                           f"{batch_size} clips, which {world_size} ranks need; {fix}")


def batch_sampler(size: int, batch_size: int, seed: int) -> EpochBatchSampler:
    """This rank's sampler: :class:`EpochBatchSampler` alone, else its distributed part."""
    world = distributed.world_size()
    if world == 1:
        return EpochBatchSampler(size, batch_size, seed=seed)
    return DistributedBatchSampler(size, batch_size, rank=distributed.rank(), world_size=world,
                                   seed=seed)


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the batch of every rank, for gloo / CPU (torch's ``SyncBatchNorm`` runs on
    GPUs only). Input ``(B, C, ...)``; per-channel sum, sum of squares and count are all-reduced
    with autograd (``torch.distributed.nn.functional.all_reduce``), so gradients flow through the
    shared statistics as in one big batch. Running statistics use the unbiased global variance.
    Without a process group, or in eval mode, it is plain batch norm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed.world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        # float64 sums: E[x^2] - E[x]^2 in float32 cancels badly when |mean| >> std.
        x64 = x.double()
        local = torch.cat([x64.sum(dims), (x64 * x64).sum(dims),
                           x64.new_full((1,), x.numel() // c)])
        stats = all_reduce(local)
        count = stats[-1]
        mean64 = stats[:c] / count
        var = (stats[c:2 * c] / count - mean64 * mean64).clamp_min(0).to(x.dtype)
        mean = mean64.to(x.dtype)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * unbiased)
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _to_cpu_sync(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        out = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        out.load_state_dict(module.state_dict())
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, _to_cpu_sync(child))
    return module


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every batch-norm layer of ``model`` synchronised across ranks (see the module docstring);
    same parameters, buffers and state-dict keys."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_cpu_sync(model)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when a process group is up, else ``model`` itself.
    DDP looks for parameters a step left without a gradient only for a model that declares it
    skips some (``skips_parameters``, :class:`flowkit.models.base.VideoClassifier`): the search
    costs a pass over the autograd graph per step, and torch warns on every rank when it finds
    none."""
    if distributed.world_size() == 1:
        return model
    ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=bool(getattr(model, "skips_parameters",
                                                                   False)))
