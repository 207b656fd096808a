"""Training objectives as pure, unreduced per-sample functions (the LightningModule reduces)."""

from __future__ import annotations

import torch


def denoising_loss(denoised: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Blind denoising loss per image: mean squared error ‖x̂ − x‖²/N.

    This is the BF-DnCNN objective Σ‖x̂ − x‖²/(2B) (algorithms.md §2.6) up to a constant factor
    (1/N instead of 1/2, so the value reads as an MSE whatever the image size).

    Args:
        denoised: network output x̂ (B, C, H, W).
        clean: target x (B, C, H, W).

    Returns:
        Loss per image, shape (B,), in float32.
    """
    if denoised.shape != clean.shape:
        raise ValueError(f"shape mismatch: denoised {tuple(denoised.shape)} vs clean {tuple(clean.shape)}")
    diff = denoised.float() - clean.float()
    return diff.pow(2).flatten(1).mean(dim=1)
