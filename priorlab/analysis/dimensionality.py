"""Effective dimensionality of a denoiser as a function of the noise level (algorithms.md §3.1 step 4).

Three definitions appear in the sources (trap 16: always say which one):

* ``frobenius_sq``: ‖A_y‖_F² = Σ_k s_k² (the bias-free paper's notebook; its published table, §12.3);
* ``trace``: tr A_y (ICLR 2024, via SURE);
* ``mse``: ‖x − x̂(y)‖²/σ² for one noise draw (dual score matching; equals E[tr A_y] in expectation
  for the MMSE denoiser).

All three coincide for a symmetric projection. For a good denoiser each falls roughly as 1/σ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from priorlab.analysis.jacobian import DEFAULT_MAX_BYTES, JacobianOperator, check_exact_size, hutchinson
from priorlab.core.noise import add_noise
from priorlab.core.protocols import Denoiser


@dataclass(frozen=True)
class DimensionalityResult:
    """Effective dimensionality for P patches at S noise levels.

    Attributes:
        sigmas: (S,) noise stds, [0, 1] units.
        trace: (S, P) tr A_y.
        frobenius_sq: (S, P) ‖A_y‖_F².
        mse: (S, P) ‖x − x̂(y)‖²/σ².
        exact: True when trace and frobenius_sq come from dense Jacobians, False for Hutchinson
            estimates with ``probes`` probes.
        probes: Rademacher probes per estimate (0 when exact).
        numel: N = C·H·W of one patch.
    """

    sigmas: torch.Tensor
    trace: torch.Tensor
    frobenius_sq: torch.Tensor
    mse: torch.Tensor
    exact: bool
    probes: int
    numel: int


def effective_dimensionality(denoiser: Denoiser, patches: torch.Tensor, sigmas: Sequence[float], *,
                             exact: bool = True, probes: int = 32, generator: torch.Generator | None = None,
                             max_bytes: int = DEFAULT_MAX_BYTES, chunk: int | None = None,
                             callback: Callable[[int, int], None] | None = None) -> DimensionalityResult:
    """Effective dimensionality of ``denoiser`` at y = x + σz for every patch x and every σ.

    Args:
        denoiser: run in eval mode.
        patches: clean patches (P, C, H, W) in [0, 1] (the paper: 10 patches of 40×40).
        sigmas: noise stds, [0, 1] units.
        exact: dense Jacobians (N VJPs each; refused above ``max_bytes``) or Hutchinson estimates.
        generator: noise draws (σ-major, patch-minor order) and probes.
        callback: ``callback(done, total)`` after each (σ, patch).
    """
    if patches.ndim != 4:
        raise ValueError(f"patches must have shape (P, C, H, W), got {tuple(patches.shape)}")
    if not patches.is_floating_point() or not torch.isfinite(patches).all():
        raise ValueError("patches must be floating-point without NaN or infinite values")
    numel = patches[0].numel()
    if exact:
        check_exact_size(numel, max_bytes)
    shape = (len(sigmas), patches.shape[0])
    tr, fro, mse = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape)
    total, done = shape[0] * shape[1], 0
    for s, sigma in enumerate(sigmas):
        sigma = float(sigma)
        if sigma <= 0:
            raise ValueError(f"sigmas must be > 0, got {sigma}")
        for p in range(patches.shape[0]):
            x = patches[p]
            y = add_noise(x[None], sigma, generator=generator)[0][0]
            op = JacobianOperator(denoiser, y, sigma, chunk=chunk)
            if exact:
                a = op.matrix(max_bytes=max_bytes).double()
                tr[s, p], fro[s, p] = a.trace().item(), a.pow(2).sum().item()
            else:
                est = hutchinson(op, probes, generator)
                tr[s, p], fro[s, p] = est["trace"][0], est["frobenius_sq"][0]
            mse[s, p] = (x - op.denoised).double().pow(2).sum().item() / sigma**2
            done += 1
            if callback is not None:
                callback(done, total)
    return DimensionalityResult(sigmas=torch.tensor([float(s) for s in sigmas]), trace=tr, frobenius_sq=fro,
                                mse=mse, exact=exact, probes=0 if exact else probes, numel=numel)
