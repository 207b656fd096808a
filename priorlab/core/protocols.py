"""Contracts every component of priorlab relies on (DESIGN.md, "Contracts").

Images are float tensors of shape (B, C, H, W) with values in [0, 1]; noise levels σ are standard
deviations in the same units (σ = 25/255 on the familiar 0-255 scale).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Denoiser(Protocol):
    """A least-squares denoiser ``x̂(y)``.

    Called as ``denoiser(y, sigma=None)`` with ``y`` of shape (B, C, H, W); returns the denoised
    estimate x̂ of the same shape (never the residual, never the score). Blind networks accept and
    ignore ``sigma``. The residual f(y) = x̂(y) − y and the score f(y)/σ² are derived from it
    (Miyasawa/Tweedie, algorithms.md §1.5).
    """

    def __call__(self, y: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor: ...


@runtime_checkable
class EnergyModel(Protocol):
    """A normalized energy U(y, t) ≈ −log p(y, t) with t = σ² the noise variance."""

    def energy(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Energy per image, shape (B,), in nats."""
        ...

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized log-density of clean images, shape (B,), in nats."""
        ...


def check_image_shape(shape, name: str = "image_shape") -> tuple[int, int, int]:
    """``shape`` as a (C, H, W) of positive ints, or a ValueError naming ``name``."""
    try:
        out = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (C, H, W), got {shape!r}") from None
    if len(out) != 3 or min(out) < 1:
        raise ValueError(f"{name} must be (C, H, W) with positive sizes, got {shape!r}")
    return out  # type: ignore[return-value]


def check_images(x: torch.Tensor, *, channels: int | None = None, name: str = "images",
                 min_size: int = 1, check_range: bool = False) -> torch.Tensor:
    """Validate a batch of images against the (B, C, H, W) float contract.

    Args:
        x: tensor to check.
        channels: required channel count C, if any.
        name: what to call the tensor in error messages.
        min_size: smallest allowed height and width.
        check_range: also require values in [0, 1] (for clean images; noisy ones leave the range).

    Returns:
        ``x`` unchanged.

    Raises:
        TypeError: not a floating-point tensor.
        ValueError: wrong rank, channel count, size, non-finite values or values out of range.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor, got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(x.shape)}; "
                         "add a batch axis with x[None] for a single image")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: {x.shape[1]} channel(s), but the model expects {channels} "
                         f"({'gray' if channels == 1 else 'RGB' if channels == 3 else str(channels)})"
                         f"; convert the image to {'gray' if channels == 1 else 'RGB'} (on the command line: "
                         f"--convert {'gray' if channels == 1 else 'rgb'}) or pick a model with matching channels")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(f"{name}: {x.shape[-2]}x{x.shape[-1]} pixels, smaller than this model's "
                         f"minimum size {min_size}x{min_size}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: NaN or infinite values")
    if check_range and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name} must have values in [0, 1], got [{x.min().item():.3g}, {x.max().item():.3g}]; "
                         "divide 8-bit images by 255")
    return x
