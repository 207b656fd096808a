"""Noise-conditioned energy UNet of dual score matching (Guth, Kadkhodaie & Simoncelli, NeurIPS 2025).

``EnergyUNet`` is the image-to-image network f_θ(y, t) of algorithms.md §7.5 (bias-free convolutions,
per-image per-channel normalization whose gain is modulated by an embedding of the noise variance t,
GELU). ``EnergyNet`` turns it into an energy U(y, t) = ½⟨y, f_θ(y, t)⟩ (§7.2) with the
``EnergyModel`` and ``Denoiser`` contracts (scores, denoiser, calibration and ``log_prob`` come from
:class:`priorlab.core.energy.NormalizedEnergy`).

Image sizes: height and width must be multiples of 2^num_scales (8 for the paper's 3 scales; 28×28
Fashion-MNIST uses 2 scales). Other sizes raise instead of being padded: padding would make the
energy depend on pixels that are not in the image, and log-densities of padded images are not what a
user asks for. The energy and the denoiser take any such size; ``log_prob`` only the shape (C, H, W)
its normalization constant was calibrated for (the ``log_norm_shape`` buffer, see
:class:`~priorlab.core.energy.NormalizedEnergy`), since C depends on d = C·H·W.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from priorlab.core.energy import NormalizedEnergy
from priorlab.zoo.layers import check_dtype

TIME_ARGUMENTS = ("variance", "log_variance")
DEFAULT_MIN_VARIANCE = 1e-9  # the smallest training variance of the paper's recipe (log10 t ≥ −9)


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of the noise variance t → MLP (algorithms.md §7.5).

    ω_k log-spaced from 1 to 1/100 (``num_freqs`` of them); features [cos(sω_k), sin(sω_k)] →
    Linear(2K → dim) → SiLU → Linear(dim → dim) → SiLU.

    ``argument="variance"`` (the paper): s = t, so t = 0 is well defined and t ≪ 0.01 gives an almost
    constant embedding; but t·∂s/∂t = t reaches 1e3 at t_max, and the time-score term, which fits
    t·∂_tU, then sees features that oscillate with period ≈ 6 in t. In priorlab's short CPU runs this gave
    loss spikes of 10²–10³ and no learning (measured, docs/dual_score_matching.md).
    ``argument="log_variance"``: s = ln(max(t, t_min)), with t·∂s/∂t ≤ 1 at every noise level (matches
    the log-uniform sampling of t); same parameter count.

    Variances below ``min_variance`` (t_min, the smallest variance seen in training) are embedded as
    t_min, so the network is never asked about a noise level it was not trained on: clean images
    (t = 0, ``log_prob``) get the embedding of t_min, where the noisy density equals the clean one to
    within the 8-bit quantization (σ = 3e-5 ≪ 1/255 at 1e-9). With the paper's argument s = t this
    changes nothing measurable (the embedding is flat there); with s = ln t it matters: t = 0 used to be
    embedded at ln 1e-12, 7 units of s outside the trained range, where the sinusoids take values never
    seen in training (0.7 bits/dim off on Fashion-MNIST, docs/dual_score_matching.md).

    Args:
        num_freqs: K (32 in the paper).
        dim: embedding width (256 in the paper).
        argument: ``variance`` or ``log_variance``.
        min_variance: t_min > 0; ``DualScoreModule`` sets it to the bottom of its ``log10_t_range``.
    """

    def __init__(self, num_freqs: int = 32, dim: int = 256, argument: str = "variance",
                 min_variance: float = DEFAULT_MIN_VARIANCE) -> None:
        super().__init__()
        if argument not in TIME_ARGUMENTS:
            raise ValueError(f"time embedding argument must be one of {TIME_ARGUMENTS}, got {argument!r}")
        if not min_variance > 0:
            raise ValueError(f"min_variance must be > 0, got {min_variance}")
        self.argument = argument
        self.min_variance = float(min_variance)
        self.register_buffer("freqs", torch.logspace(0.0, -2.0, num_freqs, dtype=torch.float32), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * num_freqs, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t (B,) → embedding (B, dim)."""
        s = t.to(self.freqs.dtype).clamp(min=self.min_variance)
        if self.argument == "log_variance":
            s = torch.log(s)
        arg = s[:, None] * self.freqs
        return self.mlp(torch.cat([torch.cos(arg), torch.sin(arg)], dim=1))


class NoiseNorm(nn.Module):
    """Per-image, per-channel normalization with preserved scale and multiplicative noise conditioning.

    out = γ_c·(x − μ_bc)·√(mean_c′(v_bc′)/(v_bc + ε) + ε)·(1 + e_c(t)), ε = 1e-5 (algorithms.md §7.5):
    channel variances are equalized while the overall RMS of the input is kept, so the layer is
    scale-equivariant up to ε; no batch statistics, no bias. e(t) = Linear(emb_dim → C) of the embedding.

    Args:
        channels: C.
        emb_dim: width of the noise embedding.
        eps: ε.
    """

    def __init__(self, channels: int, emb_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.emb = nn.Linear(emb_dim, channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # Statistics in float32 (or float64): variances of small activations underflow in bf16 under autocast.
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        mean = xf.mean(dim=(2, 3), keepdim=True)
        var = xf.var(dim=(2, 3), keepdim=True, unbiased=False)
        gain = torch.sqrt(var.mean(dim=1, keepdim=True) / (var + self.eps) + self.eps)
        cond = 1.0 + self.emb(emb).to(xf.dtype)[:, :, None, None]
        out = (xf - mean) * gain * self.weight[None, :, None, None] * cond
        return out.to(x.dtype)


class _Layer(nn.Module):
    """conv (bias-free) → NoiseNorm → GELU."""

    def __init__(self, conv: nn.Module, channels: int, emb_dim: int) -> None:
        super().__init__()
        self.conv, self.norm = conv, NoiseNorm(channels, emb_dim)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm(self.conv(x), emb))


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


def _down(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 2, stride=2, bias=False)


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False)


class EnergyUNet(nn.Module):
    """f_θ(y, t): the noise-conditioned UNet of algorithms.md §7.5 (image in, image out).

    Widths w·2^i for scales i < num_scales and 2^num_scales·w in the middle. Encoder block 0: conv3 C→w
    then (L−1) conv3; encoder block i: 2×2 stride-2 conv then (L−1) conv3; middle: 2×2 stride-2 conv,
    (L−2) conv3, 2×2 transposed conv; decoder block i > 0: conv3 on the concatenation, (L−2) conv3,
    transposed conv; decoder block 0: conv3, (L−2) conv3, then a conv3 to C channels with no
    normalization and no activation. Every other conv is followed by :class:`NoiseNorm` and GELU.

    Args:
        in_chans: image channels C.
        num_scales: number of scales (3 in the paper).
        width: channels w at the finest scale (64).
        num_layers: L, conv layers per block (3).
        num_freqs: sinusoidal frequencies of the noise embedding (32).
        emb_dim: noise-embedding width (256).
        time_embedding: argument of the sinusoids, ``variance`` (the paper) or ``log_variance``
            (see :class:`TimeEmbedding`).
        min_variance: smaller variances are embedded as this one (see :class:`TimeEmbedding`).
    """

    def __init__(self, in_chans: int = 3, num_scales: int = 3, width: int = 64, num_layers: int = 3,
                 num_freqs: int = 32, emb_dim: int = 256, time_embedding: str = "variance",
                 min_variance: float = DEFAULT_MIN_VARIANCE) -> None:
        super().__init__()
        if num_scales < 1 or width < 1 or num_layers < 2:
            raise ValueError(f"need num_scales >= 1, width >= 1, num_layers >= 2; got {num_scales}, {width}, "
                             f"{num_layers}")
        self.num_scales = num_scales
        self.embed = TimeEmbedding(num_freqs, emb_dim, time_embedding, min_variance)
        widths = [width * 2**i for i in range(num_scales)]

        def layer(conv: nn.Module, ch: int) -> _Layer:
            return _Layer(conv, ch, emb_dim)

        self.encoders = nn.ModuleList()
        ch = in_chans
        for i, w in enumerate(widths):
            first = _conv3(ch, w) if i == 0 else _down(ch, w)
            self.encoders.append(nn.ModuleList([layer(first, w)] + [layer(_conv3(w, w), w)
                                                                   for _ in range(num_layers - 1)]))
            ch = w
        mid = 2 * ch
        self.middle = nn.ModuleList([layer(_down(ch, mid), mid)]
                                    + [layer(_conv3(mid, mid), mid) for _ in range(num_layers - 2)]
                                    + [layer(_up(mid, ch), ch)])
        self.decoders = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            block = [layer(_conv3(2 * w, w), w)] + [layer(_conv3(w, w), w) for _ in range(num_layers - 2)]
            if i > 0:
                block.append(layer(_up(w, widths[i - 1]), widths[i - 1]))
            self.decoders.append(nn.ModuleList(block))
        self.final = _conv3(width, in_chans)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (2^num_scales)."""
        return 2**self.num_scales

    def forward(self, y: torch.Tensor, t: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """f_θ(y, t) for y (B, C, H, W) and variances t (B,) (or a precomputed embedding); returns (B, C, H, W)."""
        emb = self.embed(t) if emb is None else emb
        skips = []
        h = y
        for block in self.encoders:
            for lay in block:
                h = lay(h, emb)
            skips.append(h)
        for lay in self.middle:
            h = lay(h, emb)
        for block, skip in zip(self.decoders, reversed(skips)):
            h = torch.cat([h, skip], dim=1)
            for lay in block:
                h = lay(h, emb)
        return self.final(h)


class EnergyNet(NormalizedEnergy, nn.Module):
    """Energy U(y, t) = ½⟨y, f_θ(y, t)⟩ on an :class:`EnergyUNet` (algorithms.md §7.2).

    Satisfies ``EnergyModel`` (``energy``, ``log_prob``) and ``Denoiser`` (``forward(y, sigma)`` =
    y − σ²∇_y U, σ required; differentiable in y when gradients are enabled). ``log_norm_const`` (buffer,
    nats) holds C once calibrated and ``log_norm_shape`` (buffer) the image shape (C, H, W) it was calibrated
    for: ``log_prob`` refuses other shapes (:attr:`calibration_shape`).

    Args:
        in_chans: image channels C.
        num_scales: UNet scales; H and W must be multiples of 2^num_scales.
        width: channels at the finest scale.
        num_layers: conv layers per block.
        num_freqs: frequencies of the noise embedding.
        emb_dim: noise-embedding width.
        time_embedding: ``variance`` (the paper) or ``log_variance`` (stable in short runs).
        min_variance: the smallest training variance; smaller t (t = 0 in ``log_prob``) are embedded as this one.
        time_offset: add d·h(t), h = Linear(emb_dim → 1) of the noise embedding (zero at init, no bias), to the energy.
            Not in the paper. The per-image centering of :class:`NoiseNorm` leaves f_θ with almost no
            constant component, so ½⟨y, f_θ⟩ can hardly carry the y-independent part of −log p(y, t)
            (≈ (d/2)·ln t at large t); without this term short runs learned denoisers but not U(x, 0)
            (docs/dual_score_matching.md).
    """

    def __init__(self, in_chans: int = 3, num_scales: int = 3, width: int = 64, num_layers: int = 3,
                 num_freqs: int = 32, emb_dim: int = 256, time_embedding: str = "variance",
                 time_offset: bool = False, min_variance: float = DEFAULT_MIN_VARIANCE) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.unet = EnergyUNet(in_chans, num_scales, width, num_layers, num_freqs, emb_dim, time_embedding,
                               min_variance)
        self.time_offset: nn.Linear | None = None
        if time_offset:
            # No bias: a constant is invisible to both losses (it is what calibration fixes), and a parameter
            # without gradient breaks DDP.
            self.time_offset = nn.Linear(emb_dim, 1, bias=False)
            nn.init.zeros_(self.time_offset.weight)
        self._init_normalization()

    @property
    def size_multiple(self) -> int:
        return self.unet.size_multiple

    @property
    def min_size(self) -> int:
        return self.unet.size_multiple

    def check_input(self, y: torch.Tensor) -> None:
        """Shape checks with actionable messages (channels, divisibility); finiteness is the caller's."""
        if y.ndim != 4:
            raise ValueError(f"images must have shape (B, C, H, W), got {tuple(y.shape)}")
        if y.shape[1] != self.in_chans:
            raise ValueError(f"images have {y.shape[1]} channel(s) but this energy model expects {self.in_chans}")
        check_dtype(y, self)
        m = self.size_multiple
        H, W = y.shape[-2:]
        if H % m or W % m:
            raise ValueError(f"image size {H}x{W} is not a multiple of {m} (2^num_scales, num_scales="
                             f"{self.unet.num_scales}); crop to {H - H % m}x{W - W % m}, or use a model with "
                             f"fewer scales (e.g. num_scales=2 for 28x28 Fashion-MNIST)")

    def energy(self, y: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """U(y, t) = ½⟨y, f_θ(y, t)⟩ per image, (B,), nats (float32 even under autocast).

        Args:
            y: noisy images (B, C, H, W).
            t: noise variances, (B,) or a float (t = 0 for clean images).
        """
        self.check_input(y)
        if isinstance(t, (int, float)) and not (math.isfinite(t) and t >= 0):
            raise ValueError(f"the noise variance t must be finite and >= 0, got {t}")
        t = torch.as_tensor(t, dtype=torch.float32 if y.dtype != torch.float64 else y.dtype, device=y.device)
        t = t.expand(y.shape[0]) if t.ndim == 0 else t
        if t.shape != (y.shape[0],):
            raise ValueError(f"t must be a float or have shape ({y.shape[0]},), got {tuple(t.shape)}")
        emb = self.unet.embed(t)
        f = self.unet(y, t, emb)
        # The inner product sums d terms: accumulate in float32 (or float64) even if f is bf16.
        acc = torch.float64 if y.dtype == torch.float64 else torch.float32
        u = 0.5 * (y.to(acc) * f.to(acc)).flatten(1).sum(1)
        if self.time_offset is not None:
            u = u + y[0].numel() * self.time_offset(emb).to(acc).squeeze(1)
        return u


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def weights_megabytes(module: nn.Module) -> float:
    """Size of the float32 weights in MB (10^6 bytes)."""
    return count_parameters(module) * 4 / 1e6
