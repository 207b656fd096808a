"""Bias-free building blocks (algorithms.md §2.1-2.2).

Every layer of a bias-free network is linear without offset, a ReLU, or a division by a scale that
is fixed at inference. The same factories build the biased counterparts (``bias=True``): convolution
biases and ordinary batch norm, as used for the comparisons of the bias-free paper.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn


class BFBatchNorm2d(nn.Module):
    """Bias-free batch normalization, variant A of the 2020 reference (algorithms.md §2.2).

    Each channel is divided by its standard deviation and multiplied by a learned gain γ_c. The mean
    is **not** subtracted and there is no shift β, so the layer is positively homogeneous.

    * Training: s_c = unbiased std over (N, H, W); out = γ_c·x / (s_c + ε);
      running_var ← (1 − m)·running_var + m·s_c².
    * Eval: out = γ_c·x / (√running_var_c + ε).

    ε is added to the standard deviation, not inside the square root, exactly as the reference, so
    released reference checkpoints reproduce their published numbers.

    Running statistics start from the first training batch (its variance is copied, later batches
    are blended in with ``momentum``) instead of from 1. The forward pass is the reference's; the
    warm start matters when the weights are averaged (EMA): an average that starts from a running
    variance of 1 while the true activation variance is ~1e-3 makes the eval-mode network nearly
    the identity for thousands of steps. ``stats_initialized`` (0 or 1) records it.

    Setting the attribute ``sync = True`` (see :func:`set_sync_batchnorm`) computes the training
    statistics over all processes of a ``torch.distributed`` run, so DDP on B/k images per device
    trains exactly like one process on B images.

    Args:
        num_features: channel count C.
        eps: added to the standard deviation.
        momentum: update rate m of the running variance.
    """

    running_stat = "running_var"  # the buffer of the running statistic (variant B: "running_sd")

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.empty(num_features))
        self.register_buffer(self.running_stat, torch.ones(num_features))
        self.register_buffer("stats_initialized", torch.zeros(()))
        self.sync = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reference_gain_init_(self.weight)
        self.running_var.fill_(1.0)
        self.stats_initialized.zero_()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Weights saved before the warm start existed (and converted reference checkpoints) carry
        # trained running statistics but no flag: mark them initialized rather than failing.
        state_dict.setdefault(prefix + "stats_initialized", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            # Statistics in float32 even under autocast: the variance of small activations underflows in bf16.
            xf = x.float().transpose(0, 1).flatten(1)
            var = _global_var(xf) if self.sync and _distributed() else xf.var(dim=1, unbiased=True)
            with torch.no_grad():
                # Branch-free warm start (no host sync, compiles): weight 1 on the first batch.
                rate = torch.where(self.stats_initialized > 0, self.momentum, 1.0)
                self.running_var.lerp_(var.detach().to(self.running_var.dtype), rate.to(self.running_var.dtype))
                self.stats_initialized.fill_(1.0)
            std = var.sqrt()
        else:
            std = self.running_var.sqrt()
        scale = (self.weight.float() / (std + self.eps)).to(x.dtype)
        return x * scale.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BFBatchNorm2dB(BFBatchNorm2d):
    """Bias-free batch normalization, variant B of the 2021-2024 references (algorithms.md §2.2), the one of
    the ICLR 2024 UNet (§2.5).

    * Training: sd_c = √(biased variance over (N, H, W) + ε); out = γ_c·x / sd_c;
      running_sd ← (1 − m)·running_sd + m·sd_c (the momentum acts on the standard deviation).
    * Eval: out = γ_c·x / running_sd_c.
    * Gains start at N(0, 2/9/64) (std ≈ 0.0035; the reference's missing square root) clamped to ±0.025.

    The warm start (the first batch sets ``running_sd``), ``sync`` across processes and the float32
    statistics are those of :class:`BFBatchNorm2d`. Weights saved with variant A layers (a ``running_var``
    instead of ``running_sd``) load exactly: running_sd = √running_var + 1e-5 gives the same eval output.
    """

    running_stat = "running_sd"

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.normal_(0.0, 2.0 / 9.0 / 64.0).clamp_(-0.025, 0.025)
        self.running_sd.fill_(1.0)
        self.stats_initialized.zero_()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        var = state_dict.pop(prefix + "running_var", None)
        if var is not None and prefix + "running_sd" not in state_dict:  # variant A weights: same eval output
            state_dict[prefix + "running_sd"] = var.sqrt() + 1e-5
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            xf = x.float().transpose(0, 1).flatten(1)
            var = _global_var(xf, unbiased=False) if self.sync and _distributed() else xf.var(dim=1, unbiased=False)
            sd = (var + self.eps).sqrt()
            with torch.no_grad():
                rate = torch.where(self.stats_initialized > 0, self.momentum, 1.0)
                self.running_sd.lerp_(sd.detach().to(self.running_sd.dtype), rate.to(self.running_sd.dtype))
                self.stats_initialized.fill_(1.0)
        else:
            sd = self.running_sd
        scale = (self.weight.float() / sd.float()).to(x.dtype)
        return x * scale.view(1, -1, 1, 1)


def reference_gain_init_(weight: torch.Tensor) -> torch.Tensor:
    """Reference batch-norm gain init, in place: N(0, √(2/9/64)) clamped to ±0.025.

    About two thirds of the gains start at ±0.025, so a freshly built DnCNN's residual is small and
    the network starts close to the identity. The 2020 reference initializes the gains of its
    biased DnCNN the same way; PyTorch's default (γ = 1) makes the initial residual O(1), and
    the biased net then spends its first thousands of steps unlearning it.
    """
    with torch.no_grad():
        return weight.normal_(0.0, math.sqrt(2.0 / 9.0 / 64.0)).clamp_(-0.025, 0.025)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _global_var(xf: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Per-channel variance of (C, n) over every process (unbiased or biased), differentiable (two passes)."""
    from torch.distributed.nn.functional import all_reduce

    count = all_reduce(torch.full((1,), float(xf.shape[1]), device=xf.device))
    mean = all_reduce(xf.sum(dim=1)) / count
    sq = all_reduce((xf - mean[:, None]).pow(2).sum(dim=1))
    return sq / (count - 1) if unbiased else sq / count


def set_sync_batchnorm(module: nn.Module, enabled: bool = True) -> int:
    """Switch cross-process statistics on or off in every :class:`BFBatchNorm2d`; returns how many."""
    n = 0
    for m in module.modules():
        if isinstance(m, BFBatchNorm2d):
            m.sync = enabled
            n += 1
    return n


def check_input(y: torch.Tensor, channels: int, network: nn.Module | None = None) -> None:
    """Shape and dtype of a network's input (B, C, H, W), checked without reading its values (no device sync).

    With ``network``, also :func:`check_dtype` against its parameters.
    """
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        raise TypeError(f"the network takes a floating-point tensor, got "
                        f"{y.dtype if isinstance(y, torch.Tensor) else type(y).__name__}; convert with .float()")
    if y.ndim != 4 or y.shape[1] != channels:
        raise ValueError(f"the network takes (B, {channels}, H, W) images, got shape {tuple(y.shape)}"
                         + ("; add a batch axis with y[None]" if y.ndim == 3 else ""))
    if network is not None:
        check_dtype(y, network)


def check_dtype(y: torch.Tensor, network: nn.Module) -> None:
    """The input's dtype must be the network's parameters' dtype, unless autocast casts both.

    torch's own message for a float64 image through float32 weights names neither the image nor the fix.
    Autocast casts float32/16 inputs but never float64 ones, which stay an error under it too.
    """
    w = next(network.parameters(), None)
    kind = y.device.type
    autocast = (y.dtype != torch.float64 and torch.amp.is_autocast_available(kind)
                and torch.is_autocast_enabled(kind))
    if w is not None and w.dtype != y.dtype and not autocast:
        have, want = (str(d).removeprefix("torch.") for d in (y.dtype, w.dtype))
        raise TypeError(f"the network's weights are {want} but the images are {have}: convert the images "
                        f"with .to(torch.{want}) (or the network with .to(torch.{have}))")


def conv3x3(in_ch: int, out_ch: int, *, bias: bool) -> nn.Conv2d:
    """3×3 convolution with zero padding 1 (keeps the spatial size)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=bias)


class BatchNorm2d(nn.BatchNorm2d):
    """Ordinary batch norm (the biased counterpart) with the same warm start as :class:`BFBatchNorm2d`.

    The first training batch sets the running mean and variance; later ones use ``momentum``. The
    gains start as the bias-free layer's (:func:`reference_gain_init_`), shifts β at zero, so the
    two counterparts differ only in the mean subtraction and the additive terms.
    """

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.affine:
            reference_gain_init_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.num_batches_tracked.item() == 0:
            momentum, self.momentum = self.momentum, 1.0
            try:
                return super().forward(x)
            finally:
                self.momentum = momentum
        return super().forward(x)


def batch_norm(channels: int, *, bias: bool, variant: str = "A") -> nn.Module:
    """Bias-free batch norm (``variant`` "A": the 2020 DnCNN's, "B": the 2021-2024 networks'), or ordinary batch
    norm (with bias β and mean) for the biased counterpart."""
    if bias:
        return BatchNorm2d(channels)
    if variant not in ("A", "B"):
        raise ValueError(f"bias-free batch norm variant must be 'A' or 'B', got {variant!r}")
    return BFBatchNorm2d(channels) if variant == "A" else BFBatchNorm2dB(channels)


def init_kaiming(module: nn.Module) -> None:
    """Reference init: Kaiming-normal (fan_in, ReLU gain) convolution weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
