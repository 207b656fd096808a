"""Noise conventions (algorithms.md §1.3).

priorlab stores σ as a standard deviation relative to the image range [0, 1]. The 0-255 scale
(σ₂₅₅ = 255·σ) appears only at the command line and in reports; energy models use the variance
t = σ². All randomness comes from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

SigmaSchedule = Literal["uniform", "log_uniform", "quadratic"]


def sigma_from_255(sigma_255: float | torch.Tensor) -> float | torch.Tensor:
    """σ on the [0, 1] scale from σ₂₅₅ on the 0-255 scale."""
    return sigma_255 / 255.0


def sigma_to_255(sigma: float | torch.Tensor) -> float | torch.Tensor:
    """σ₂₅₅ on the 0-255 scale from σ on the [0, 1] scale."""
    return sigma * 255.0


def sigma_to_variance(sigma: float | torch.Tensor) -> float | torch.Tensor:
    """Noise variance t = σ² (dual score matching's noise level)."""
    return sigma**2


def variance_to_sigma(t: float | torch.Tensor) -> float | torch.Tensor:
    """σ = √t."""
    return t**0.5 if isinstance(t, torch.Tensor) else math.sqrt(t)


def psnr_in_from_sigma(sigma: float) -> float:
    """Nominal input PSNR in dB of noise σ for peak 1: −20·log10(σ)."""
    return -20.0 * math.log10(sigma)


def sample_sigmas(batch: int, sigma_min: float, sigma_max: float, *, schedule: SigmaSchedule = "uniform",
                  generator: torch.Generator | None = None, device: torch.device | str | None = None,
                  ) -> torch.Tensor:
    """Draw one noise level per image for blind training (algorithms.md §2.6).

    Args:
        batch: number of images B.
        sigma_min: smallest σ, [0, 1] units (≥ 0; > 0 for ``log_uniform``).
        sigma_max: largest σ, [0, 1] units.
        schedule: ``uniform`` (BF-DnCNN recipe), ``log_uniform`` (equal mass per octave) or
            ``quadratic`` (σ = (U(√max − √min) + √min)², the ICLR 2024 recipe, denser at small σ).
        generator: source of randomness.
        device: where to put the result.

    Returns:
        σ of shape (B,), float32.
    """
    if not 0 <= sigma_min <= sigma_max < float("inf"):
        raise ValueError(f"need 0 <= sigma_min <= sigma_max, got [{sigma_min}, {sigma_max}]")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    u = torch.rand(batch, generator=generator, device=device)
    if schedule == "uniform":
        return sigma_min + (sigma_max - sigma_min) * u
    if schedule == "log_uniform":
        if sigma_min <= 0:
            raise ValueError("log_uniform noise needs sigma_min > 0")
        lo, hi = math.log(sigma_min), math.log(sigma_max)
        return torch.exp(lo + (hi - lo) * u)
    if schedule == "quadratic":
        lo, hi = math.sqrt(sigma_min), math.sqrt(sigma_max)
        return (lo + (hi - lo) * u) ** 2
    raise ValueError(f"unknown sigma schedule {schedule!r}; choose uniform, log_uniform or quadratic")


def add_noise(x: torch.Tensor, sigma: float | torch.Tensor, *, generator: torch.Generator | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """y = x + σ·z with z ~ N(0, I), one σ per image.

    Args:
        x: clean images (B, C, H, W).
        sigma: a float or a (B,) tensor of standard deviations, [0, 1] units.
        generator: source of randomness (draws on ``x``'s device).

    Returns:
        ``(y, noise)`` where ``noise = σ·z`` has the shape of ``x``.
    """
    if not x.is_floating_point():
        raise TypeError(f"add_noise takes float images, got {x.dtype}; divide 8-bit data by 255")
    if isinstance(sigma, (int, float)) and not (0 <= sigma < float("inf")):
        raise ValueError(f"sigma must be a finite noise level >= 0 ([0, 1] units), got {sigma}")
    sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma_t.ndim == 0:
        sigma_t = sigma_t.expand(x.shape[0])
    if sigma_t.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a float or have shape ({x.shape[0]},), got {tuple(sigma_t.shape)}")
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    noise = sigma_t.view(-1, *([1] * (x.ndim - 1))) * z
    return x + noise, noise
