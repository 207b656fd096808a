"""Frozen result dataclasses returned by library functions."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DenoiseResult:
    """Outcome of denoising a batch of images.

    Attributes:
        denoised: x̂, shape (B, C, H, W), not clipped.
        noisy: the network input y, shape (B, C, H, W).
        sigma: the noise std that was added, [0, 1] units, or None for a blind run on given noisy input.
        psnr: output PSNR in dB per image (B,) against the clean image (output clipped to [0, 1]), or None.
        ssim: output SSIM per image (B,), or None.
        psnr_in: input PSNR in dB per image (B,), or None.
    """

    denoised: torch.Tensor
    noisy: torch.Tensor
    sigma: float | None = None
    psnr: torch.Tensor | None = None
    ssim: torch.Tensor | None = None
    psnr_in: torch.Tensor | None = None
