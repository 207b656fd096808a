"""Units of log-probabilities of images: nats, bits/dim and dB/dim (algorithms.md §7.4, ecosystem.md §8).

A normalized density p on [0, 1]^d gives −log p(x) in nats. Benchmarks report bits/dim under the
discrete 8-bit convention: the density is turned into the probability of the 256-level bin of each
pixel, which adds log2(256) = 8 bits per dimension,

    bits/dim = −log p(x) / (d ln 2) + log2(levels).

How the data were dequantized (none, uniform, ...) changes what this number means and is recorded
next to every result; this module only converts units.
"""

from __future__ import annotations

import math

import torch

LN2 = math.log(2.0)
LN10 = math.log(10.0)

# Names of the dequantization conventions results record (ecosystem.md §8.3).
DEQUANTIZATIONS = ("none", "uniform")


def bits_per_dim(nll_nats: torch.Tensor, dims: int, *, levels: int | None = 256) -> torch.Tensor:
    """Negative log-likelihood per image in nats → bits per dimension.

    Args:
        nll_nats: −log p(x) of images in [0, 1], shape (B,), in nats.
        dims: number of dimensions d = C·H·W of one image.
        levels: quantization levels of the data (256 for 8-bit images): adds log2(levels) so that a
            density on [0, 1]^d is compared with probabilities of discrete images. ``None`` reports
            the continuous density on [0, 1]^d (no offset).

    Returns:
        bits/dim per image, shape (B,).
    """
    if dims <= 0:
        raise ValueError(f"dims must be positive, got {dims}")
    offset = 0.0 if levels is None else math.log2(levels)
    return nll_nats / (dims * LN2) + offset


def nats_from_bits_per_dim(bpd: torch.Tensor, dims: int, *, levels: int | None = 256) -> torch.Tensor:
    """Inverse of :func:`bits_per_dim`: bits/dim → −log p(x) in nats per image."""
    if dims <= 0:
        raise ValueError(f"dims must be positive, got {dims}")
    offset = 0.0 if levels is None else math.log2(levels)
    return (bpd - offset) * dims * LN2


def db_per_dim(log_prob_nats: torch.Tensor, dims: int) -> torch.Tensor:
    """log p(x) in nats → decibels per dimension, 10·log10 p / d (algorithms.md §7.4).

    bits/dim (8-bit) = 8 − (dB/dim)/(10·log10 2).
    """
    if dims <= 0:
        raise ValueError(f"dims must be positive, got {dims}")
    return 10.0 * log_prob_nats / (dims * LN10)


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean of per-image values (stderr NaN for a single value: undefined)."""
    v = values.detach().double().flatten()
    if v.numel() == 0:
        raise ValueError("no values")
    if not torch.isfinite(v).all():
        raise ValueError("values contain NaN or infinity")
    stderr = float(v.std(unbiased=True) / math.sqrt(v.numel())) if v.numel() > 1 else math.nan
    return float(v.mean()), stderr
