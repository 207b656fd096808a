"""EMA of the weights without a host-device synchronization per step.

Lightning's ``EMAWeightAveraging`` updates a ``torch.optim.swa_utils.AveragedModel`` after every step, and that
update branches on its step counter, a tensor on the GPU (``bool(self.n_averaged == 0)``, ``if self.n_averaged >
0``): two ``.item()``-like reads per step, each of which waits for the GPU to finish the step and empties its
queue of kernels. :class:`EMA` is the same callback (same arguments, same checkpoints, the averaged weights
validated and saved in ``state_dict``) with an averaged model that keeps a host copy of the counter and updates
all floating-point tensors with one fused ``lerp`` per device and dtype.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch import nn
from torch.optim.swa_utils import AveragedModel


def _checked_decay(decay: float) -> float:
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
    return float(decay)


class HostCountedEMAModel(AveragedModel):
    """``AveragedModel`` for an exponential moving average, ``avg ← decay·avg + (1 − decay)·current``.

    The first update copies the weights (as ``AveragedModel`` does). Integer buffers are copied, not averaged.

    Args:
        model: the module to average (deep-copied).
        decay: EMA decay in [0, 1).
        device: where the averaged copy lives (default: the model's).
        use_buffers: average the buffers too (else copy them), as in ``AveragedModel``.
    """

    def __init__(self, model: nn.Module, decay: float, device: torch.device | str | None = None,
                 use_buffers: bool = False) -> None:
        decay = _checked_decay(decay)
        super().__init__(model, device=device, use_buffers=use_buffers)
        self.decay = decay
        self._count: int | None = None  # host copy of n_averaged; read once (after construction or a load)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        self._count = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _pairs(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.use_buffers:
            mine = itertools.chain(self.module.parameters(), self.module.buffers())
            theirs = itertools.chain(model.parameters(), model.buffers())
        else:
            mine, theirs = self.module.parameters(), model.parameters()
        return [(a.detach(), b.detach()) for a, b in zip(mine, theirs, strict=True)]

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        if self._count is None:
            self._count = int(self.n_averaged)  # one sync, not one per step
        groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[torch.Tensor]]] = (
            defaultdict(lambda: ([], [])))
        for avg, cur in self._pairs(model):
            cur = cur.to(avg.device)
            if self._count == 0 or not avg.is_floating_point():
                avg.copy_(cur)
            else:
                group = groups[(avg.device, avg.dtype)]
                group[0].append(avg)
                group[1].append(cur.to(avg.dtype))
        for avgs, curs in groups.values():
            torch._foreach_lerp_(avgs, curs, 1.0 - self.decay)
        if not self.use_buffers:  # buffers follow the model, as in AveragedModel
            for b_avg, b_cur in zip(self.module.buffers(), model.buffers(), strict=True):
                b_avg.detach().copy_(b_cur.detach().to(b_avg.device))
        self.n_averaged += 1  # on the device, no read
        self._count += 1


class EMA(EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging`` without its two host syncs per step (see the module docstring).

    Same arguments (``decay``, ``update_every_n_steps``, ``update_starting_at_step``, ...), same behaviour: the
    averaged weights are used for validation and stored in the checkpoint's ``state_dict``. YAML::

        trainer:
          callbacks:
            - class_path: priorlab.lightning_modules.EMA
              init_args: {decay: 0.999}
    """

    def __init__(self, device: torch.device | str | int | None = None, use_buffers: bool = True,
                 decay: float = 0.999, update_every_n_steps: int = 1, update_starting_at_step: int | None = None,
                 update_starting_at_epoch: int | None = None) -> None:
        super().__init__(device=device, use_buffers=use_buffers, decay=decay,
                         update_every_n_steps=update_every_n_steps, update_starting_at_step=update_starting_at_step,
                         update_starting_at_epoch=update_starting_at_epoch)
        self.decay = _checked_decay(decay)
        self.ema_device, self.ema_use_buffers = device, use_buffers
        # Lightning keeps avg_fn, a closure, for its AveragedModel; ours does not use it, and a closure cannot be
        # pickled, which ddp_spawn does to every callback (ecosystem.md §6.6).
        self._kwargs.pop("avg_fn", None)

    def state_dict(self) -> dict[str, Any]:
        """Lightning's callback state plus the decay, so that a checkpoint says how its average was made."""
        return {**super().state_dict(), "decay": self.decay}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            super().setup(trainer, pl_module, stage)
            return
        # What WeightAveraging.setup does for fit, with the host-counted model (built once: it deep-copies).
        self._average_model = HostCountedEMAModel(pl_module, self.decay, device=self.ema_device or pl_module.device,
                                                  use_buffers=self.ema_use_buffers)
