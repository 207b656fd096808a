"""Generalization across noise levels: output PSNR vs σ for several denoisers on the same noise.

The bias-free paper's finding (algorithms.md §2.1, §12.1): a biased network trained on σ₂₅₅ ∈ [0, 10]
collapses above its training range, the bias-free one keeps working.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from priorlab.analysis.jacobian import eval_mode
from priorlab.core.noise import add_noise
from priorlab.core.protocols import Denoiser


@dataclass(frozen=True)
class GeneralizationResult:
    """PSNR of M denoisers at S noise levels on B images.

    Attributes:
        names: the M denoisers' names.
        sigmas: (S,) noise stds, [0, 1] units.
        psnr: (M, S, B) output PSNR in dB, output clipped to [0, 1], peak 1.
        psnr_in: (S, B) PSNR of the noisy input clipped to [0, 1].
    """

    names: tuple[str, ...]
    sigmas: torch.Tensor
    psnr: torch.Tensor
    psnr_in: torch.Tensor

    def mean_psnr(self) -> torch.Tensor:
        """(M, S) PSNR averaged over images (mean of per-image PSNRs)."""
        return self.psnr.mean(-1)


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB (peak 1) of ``x_hat`` clipped to [0, 1] against ``x``; (B,) from (B, C, H, W)."""
    mse = (x_hat.clamp(0, 1) - x).double().pow(2).flatten(1).mean(1)
    return (-10 * torch.log10(mse.clamp_min(1e-20))).float()


def psnr_vs_sigma(denoisers: Mapping[str, Denoiser], images: Sequence[torch.Tensor] | torch.Tensor,
                  sigmas: Sequence[float], *, generator: torch.Generator | None = None,
                  callback: Callable[[int, int], None] | None = None) -> GeneralizationResult:
    """Denoise every image at every σ with every denoiser, all denoisers seeing the same noisy input.

    Args:
        denoisers: name -> denoiser (each run in eval mode, one image at a time so sizes may differ).
        images: clean images, a (B, C, H, W) tensor or a sequence of (C, H, W) tensors, in [0, 1].
        sigmas: noise stds, [0, 1] units.
        generator: the noise, drawn σ-major, image-minor.
        callback: ``callback(done, total)`` after each (σ, image).
    """
    if not denoisers:
        raise ValueError("give at least one denoiser")
    names = tuple(denoisers)
    imgs = list(images)
    out = torch.zeros(len(names), len(sigmas), len(imgs))
    out_in = torch.zeros(len(sigmas), len(imgs))
    total = len(sigmas) * len(imgs)
    with contextlib.ExitStack() as stack, torch.no_grad():
        for d in denoisers.values():
            stack.enter_context(eval_mode(d))
        for s, sigma in enumerate(sigmas):
            for b, x in enumerate(imgs):
                y, _ = add_noise(x[None], float(sigma), generator=generator)
                out_in[s, b] = psnr(y, x[None])[0]
                for m, name in enumerate(names):
                    out[m, s, b] = psnr(denoisers[name](y, float(sigma)), x[None])[0]
                if callback is not None:
                    callback(s * len(imgs) + b + 1, total)
    return GeneralizationResult(names=names, sigmas=torch.tensor([float(s) for s in sigmas]), psnr=out,
                                psnr_in=out_in)

