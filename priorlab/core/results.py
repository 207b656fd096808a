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


@dataclass(frozen=True)
class SampleResult:
    """Outcome of the coarse-to-fine sampler (Algorithm 1, ``priorlab.samplers.sample_adaptive``).

    Attributes:
        images: x̂ = y + f(y) of the last iterate, (B, C, H, W), not clipped.
        last_iterate: the last iterate y itself (B, C, H, W), still carrying noise ≈ σ_final.
        steps: number of updates per sample (B,), int64.
        sigmas: σ_t = ‖d_t‖/√N after every step (B, T), NaN once a sample has stopped; [0, 1] units.
        final_sigma: σ_t of each sample's last update (B,).
        converged: (B,) bool, σ_t reached σ_final (and the sample did not diverge).
        diverged: (B,) bool, σ_t exceeded the guard ("not converging"); the sample was frozen.
        params: the settings used (σ₀, σ_final, h₀, β, schedule, stopping rule, initial mean…).
        trajectory: y after every step (T + 1, B, C, H, W) on the CPU, when requested; else None.
    """

    images: torch.Tensor
    last_iterate: torch.Tensor
    steps: torch.Tensor
    sigmas: torch.Tensor
    final_sigma: torch.Tensor
    converged: torch.Tensor
    diverged: torch.Tensor
    params: dict
    trajectory: torch.Tensor | None = None


@dataclass(frozen=True)
class SolveResult:
    """Outcome of the constrained sampler for a linear inverse problem (Algorithm 2,
    ``priorlab.solvers.solve_linear``), with S stochastic reconstructions per measurement.

    Attributes:
        samples: reconstructions (B, S, C, H, W), not clipped; re-projected onto the measurements
            when ``params["reproject"]`` is true (then ``measure(sample) = measurement`` exactly).
        mean: average over the S samples (B, C, H, W), an approximation of the MMSE estimate E[x | c].
        std: per-pixel standard deviation over the samples (B, C, H, W) (unbiased; zeros when S = 1).
        measurement_error: ‖measure(sample) − c‖/√k per sample (B, S), before re-projection.
        steps: number of updates per sample (B, S).
        sigmas: σ_t histories (B, S, T), NaN after a sample stopped.
        final_sigma: (B, S).
        converged: (B, S) bool.
        diverged: (B, S) bool.
        params: the settings used.
    """

    samples: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    measurement_error: torch.Tensor
    steps: torch.Tensor
    sigmas: torch.Tensor
    final_sigma: torch.Tensor
    converged: torch.Tensor
    diverged: torch.Tensor
    params: dict

    @property
    def images(self) -> torch.Tensor:
        """The first reconstruction of every measurement, (B, C, H, W)."""
        return self.samples[:, 0]
