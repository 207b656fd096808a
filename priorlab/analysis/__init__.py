"""Understanding a denoiser: its Jacobian, adaptive filters and basis, effective dimensionality, and
generalization across noise levels (algorithms.md §2.1, §3).

Pure functions over a :class:`~priorlab.core.Denoiser` given by the caller; no file I/O, no progress
bars (a ``callback(done, total)`` reports progress), randomness from a ``torch.Generator``, results as
frozen dataclasses. Every function runs the denoiser in eval mode (:func:`eval_mode`): bias-free
homogeneity and x̂(y) = A_y·y hold only with batch norm's running statistics.
"""

from priorlab.analysis.dimensionality import DimensionalityResult, effective_dimensionality
from priorlab.analysis.filters import AdaptiveBasis, AdaptiveFilters, adaptive_basis, adaptive_filters, effective_radius
from priorlab.analysis.generalization import GeneralizationResult, psnr, psnr_vs_sigma
from priorlab.analysis.jacobian import (
    DEFAULT_MAX_BYTES,
    JacobianAnalysis,
    JacobianOperator,
    analyze_jacobian,
    check_exact_size,
    eval_mode,
    exact_jacobian_bytes,
    hutchinson,
    leading_eigenpairs,
    rademacher,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "AdaptiveBasis",
    "AdaptiveFilters",
    "DimensionalityResult",
    "GeneralizationResult",
    "JacobianAnalysis",
    "JacobianOperator",
    "adaptive_basis",
    "adaptive_filters",
    "analyze_jacobian",
    "check_exact_size",
    "effective_dimensionality",
    "effective_radius",
    "eval_mode",
    "exact_jacobian_bytes",
    "hutchinson",
    "leading_eigenpairs",
    "psnr",
    "psnr_vs_sigma",
    "rademacher",
]
