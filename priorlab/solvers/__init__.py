"""Linear measurement operators with orthonormal rows and the constrained sampler (Algorithm 2)."""

from priorlab.solvers.algorithm2 import solve_linear
from priorlab.solvers.operators import (
    BlockAverage,
    FourierSubset,
    GaussianDeblur,
    LinearOperator,
    MaskOperator,
    MatrixOperator,
    bayer_demosaic,
    box_inpainting,
    compressive_sensing,
    random_mosaic,
    random_pixels,
    spectral_lowpass,
)

__all__ = [
    "BlockAverage",
    "FourierSubset",
    "GaussianDeblur",
    "LinearOperator",
    "MaskOperator",
    "MatrixOperator",
    "bayer_demosaic",
    "box_inpainting",
    "compressive_sensing",
    "random_mosaic",
    "random_pixels",
    "solve_linear",
    "spectral_lowpass",
]
