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


def noise_normalized_weight(sigma: torch.Tensor, floor: float = 1.0 / 255.0) -> torch.Tensor:
    """Per-image loss weight 1/(σ² + floor²), for ``DenoiserModule(loss_weighting="noise")``.

    With the plain MSE, images at σ₂₅₅ = 5 weigh about a hundred times less than images at σ₂₅₅ = 50
    (their errors are that much smaller), so a short blind training barely learns to leave clean
    detail alone at low noise. Dividing by the noise variance gives every noise level a comparable
    share of the gradient (the loss reads as the output error relative to the input noise); ``floor``
    keeps the weight finite at σ = 0. For a network that can tell the noise level from its input, the
    minimizer at each σ is still the MMSE denoiser; the weighting changes which errors training fixes first.

    Args:
        sigma: noise std per image (B,), [0, 1] units.
        floor: σ added in quadrature (default 1/255).

    Returns:
        Weights (B,), float32.
    """
    s = _acc(torch.as_tensor(sigma))
    return 1.0 / (s.pow(2) + floor**2)


def _per_image(t: torch.Tensor, batch: int, check: bool = True) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.shape != (batch,):
        raise ValueError(f"t must have shape ({batch},), got {tuple(t.shape)}")
    if check and (t <= 0).any():  # reading the answer waits for the device: training steps pass check=False
        raise ValueError("noise variances t must be > 0 in the dual score matching losses")
    return _acc(t)


def _acc(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (bf16 activations under autocast), float64 kept."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def dsm_loss(denoised: torch.Tensor, clean: torch.Tensor, t: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    """Denoising score matching term of dual score matching, per image (algorithms.md §7.3).

    ℓ_DSM = ‖D(y, t) − x‖²/(d·t) with D = y − t∇_y U; equivalently ‖z − √t∇_y U‖²/d for y = x + √t·z,
    so it is ≈ 1 for the identity denoiser and ≈ MSE/t otherwise, at every noise level.

    Args:
        denoised: D(y, t) (B, C, H, W).
        clean: x (B, C, H, W).
        t: noise variance per image (B,), > 0.
        check: verify t > 0 (a host-device sync on a GPU; training steps that draw t themselves skip it).

    Returns:
        ℓ_DSM per image, (B,), float32 (float64 for float64 inputs).
    """
    if denoised.shape != clean.shape:
        raise ValueError(f"shape mismatch: denoised {tuple(denoised.shape)} vs clean {tuple(clean.shape)}")
    t = _per_image(t, clean.shape[0], check)
    return (_acc(denoised) - _acc(clean)).pow(2).flatten(1).mean(1) / t


def tsm_loss(time_score: torch.Tensor, noisy: torch.Tensor, clean: torch.Tensor, t: torch.Tensor, *,
             check: bool = True) -> torch.Tensor:
    """Time score matching term of dual score matching, per image (algorithms.md §7.3).

    ℓ_TSM = (t·∂_tU/d − ½ + ‖y − x‖²/(2dt))², the regression of ∂_t U onto d/(2t) − ‖y − x‖²/(2t²)
    weighted by (t/d)²; unbiased because of the time-score identity (§1.5).

    Args:
        time_score: ∂_t U(y, t) per image (B,), nats per unit of variance.
        noisy: y (B, C, H, W).
        clean: x (B, C, H, W).
        t: noise variance per image (B,), > 0.
        check: verify t > 0 (see :func:`dsm_loss`).

    Returns:
        ℓ_TSM per image, (B,), float32 (float64 for float64 inputs).
    """
    if noisy.shape != clean.shape:
        raise ValueError(f"shape mismatch: noisy {tuple(noisy.shape)} vs clean {tuple(clean.shape)}")
    batch, dims = clean.shape[0], clean[0].numel()
    t = _per_image(t, batch, check)
    if time_score.shape != (batch,):
        raise ValueError(f"time_score must have shape ({batch},), got {tuple(time_score.shape)}")
    sq = (_acc(noisy) - _acc(clean)).pow(2).flatten(1).sum(1)
    return (t * _acc(time_score) / dims - 0.5 + sq / (2 * dims * t)).pow(2)
