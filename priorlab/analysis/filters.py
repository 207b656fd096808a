"""Adaptive filters (rows of A_y) and the adaptive basis (eigenvectors of its symmetric part).

Row i of A_y = ∇_y x̂(y) is the linear filter the denoiser applies around pixel i at this input:
x̂_i(y) = Σ_j A_y[i, j]·y_j (exactly, for a bias-free network in eval mode). The rows sum to about 1
(weighted local averages), follow edges, and widen as σ grows (algorithms.md §3.1 step 2).
The eigenvectors of ½(A_y + A_yᵀ) with large eigenvalues span the subspace the denoiser keeps
(the adaptive shrinkage view, §3.2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from priorlab.analysis.jacobian import DEFAULT_MAX_BYTES, JacobianOperator, check_exact_size, leading_eigenpairs
from priorlab.core.noise import add_noise
from priorlab.core.protocols import Denoiser


@dataclass(frozen=True)
class AdaptiveFilters:
    """Rows of A_y at chosen pixels, for one or several noise levels.

    Attributes:
        pixels: (K, 2) integer (row, column) positions.
        sigmas: (S,) noise stds, [0, 1] units.
        filters: (S, K, C, H, W); filters[s, k] = ∂x̂_{c0, pixel k}/∂y for channel c0 = 0.
        sums: (S, K) Σ_j A[i, j] (≈ 1 for a local average).
        radii: (S, K) effective radius in pixels, see :func:`effective_radius`.
        noisy: (S, C, H, W) the inputs y at which the Jacobians were taken.
        denoised: (S, C, H, W) x̂(y).
    """

    pixels: torch.Tensor
    sigmas: torch.Tensor
    filters: torch.Tensor
    sums: torch.Tensor
    radii: torch.Tensor
    noisy: torch.Tensor
    denoised: torch.Tensor


def effective_radius(filters: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """RMS distance of a filter's energy from its pixel: r = √(Σ_j w_j² d_j² / Σ_j w_j²), in pixels.

    Args:
        filters: (K, C, H, W) or (..., K, C, H, W) filter weights.
        pixels: (K, 2) (row, column) centres.

    Returns:
        (..., K) radii; 0 for an identity filter, s for a 2-D Gaussian of std s (its squared weights have std
        s/√2 per axis).
    """
    h, w = filters.shape[-2:]
    rows = torch.arange(h, dtype=torch.float64, device=filters.device)
    cols = torch.arange(w, dtype=torch.float64, device=filters.device)
    py = pixels[:, 0].to(torch.float64).to(filters.device).view(-1, 1, 1)
    px = pixels[:, 1].to(torch.float64).to(filters.device).view(-1, 1, 1)
    d2 = (rows.view(1, -1, 1) - py) ** 2 + (cols.view(1, 1, -1) - px) ** 2  # (K, H, W)
    energy = filters.double().pow(2).sum(-3)  # (..., K, H, W), channels pooled
    r2 = (energy * d2).sum((-2, -1)) / energy.sum((-2, -1)).clamp_min(1e-300)
    return r2.sqrt().float()


def adaptive_filters(denoiser: Denoiser, x: torch.Tensor, pixels: Sequence[tuple[int, int]] | torch.Tensor,
                     sigmas: Sequence[float], *, generator: torch.Generator | None = None,
                     noisy: torch.Tensor | None = None, chunk: int | None = None,
                     callback: Callable[[int, int], None] | None = None) -> AdaptiveFilters:
    """Rows of A_y at ``pixels`` for y = x + σz at each σ (one VJP per row).

    Args:
        denoiser: run in eval mode.
        x: clean image (C, H, W) or (1, C, H, W).
        pixels: K (row, column) positions inside the image.
        sigmas: noise stds, [0, 1] units; a fresh z from ``generator`` per σ.
        noisy: optional (S, C, H, W) noisy inputs to use instead of drawing y = x + σz.
        callback: ``callback(done, total)`` after each σ.
    """
    x = x[0] if x.ndim == 4 else x
    c, h, w = x.shape
    pix = torch.as_tensor(pixels, dtype=torch.long).reshape(-1, 2)
    if ((pix[:, 0] < 0) | (pix[:, 0] >= h) | (pix[:, 1] < 0) | (pix[:, 1] >= w)).any():
        raise ValueError(f"pixels must lie inside the {h}x{w} image, got {pix.tolist()}")
    flat = pix[:, 0] * w + pix[:, 1]  # channel 0
    out_f, out_y, out_d = [], [], []
    for s, sigma in enumerate(sigmas):
        y = noisy[s] if noisy is not None else add_noise(x[None], float(sigma), generator=generator)[0][0]
        op = JacobianOperator(denoiser, y, float(sigma), chunk=chunk)
        out_f.append(op.rows(flat).reshape(-1, c, h, w))
        out_y.append(op.y)
        out_d.append(op.denoised)
        if callback is not None:
            callback(s + 1, len(sigmas))
    filters = torch.stack(out_f)
    return AdaptiveFilters(pixels=pix, sigmas=torch.tensor([float(s) for s in sigmas]), filters=filters,
                           sums=filters.sum((-3, -2, -1)), radii=effective_radius(filters, pix),
                           noisy=torch.stack(out_y), denoised=torch.stack(out_d))


@dataclass(frozen=True)
class AdaptiveBasis:
    """Leading eigenpairs of the symmetric part ½(A_y + A_yᵀ).

    Attributes:
        eigenvalues: (k,) descending (shrinkage factors, mostly in [0, 1]).
        eigenvectors: (k, C, H, W) orthonormal.
        exact: True when from the dense Jacobian, False for subspace iteration.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    exact: bool


def adaptive_basis(denoiser: Denoiser, y: torch.Tensor, sigma: float | None = None, *, k: int = 16,
                   mode: str = "auto", iters: int = 20, generator: torch.Generator | None = None,
                   max_bytes: int = DEFAULT_MAX_BYTES, chunk: int | None = None,
                   callback: Callable[[int, int], None] | None = None) -> AdaptiveBasis:
    """The adaptive basis of the denoiser at the noisy input ``y`` (C, H, W) or (1, C, H, W).

    ``mode``: ``exact`` (dense Jacobian, then ``eigh``), ``matrix-free`` (subspace iteration with
    ``iters`` steps from a random start drawn from ``generator``) or ``auto`` (exact when it fits).
    """
    if mode not in ("auto", "exact", "matrix-free"):
        raise ValueError(f"mode must be 'auto', 'exact' or 'matrix-free', got {mode!r}")
    if k < 1 or iters < 1:
        raise ValueError(f"k and iters must be >= 1, got {k} and {iters}")
    op = JacobianOperator(denoiser, y, sigma, chunk=chunk)
    k = min(k, op.numel)
    exact = mode == "exact" or (mode == "auto" and 4 * op.numel ** 2 <= max_bytes)
    if exact:
        check_exact_size(op.numel, max_bytes)
        a = op.matrix(max_bytes=max_bytes, callback=callback).double()
        evals, evecs = torch.linalg.eigh(0.5 * (a + a.T))
        evals, evecs = evals.flip(0)[:k], evecs.flip(1)[:, :k].T
    else:
        evals, evecs = leading_eigenpairs(op, k, iters=iters, generator=generator)
    return AdaptiveBasis(eigenvalues=evals.float(), eigenvectors=evecs.float().reshape(k, *op.shape), exact=exact)
