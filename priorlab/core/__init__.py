"""Pure math shared by every layer (imports torch only): contracts, noise conventions, losses, results."""

from priorlab.core.energy import GaussianEnergy
from priorlab.core.losses import denoising_loss, dsm_loss, noise_normalized_weight, tsm_loss
from priorlab.core.noise import (
    add_noise,
    psnr_in_from_sigma,
    sample_sigmas,
    sigma_from_255,
    sigma_to_255,
    sigma_to_variance,
    variance_to_sigma,
)
from priorlab.core.protocols import Denoiser, EnergyModel, check_images
from priorlab.core.results import DenoiseResult

__all__ = [
    "Denoiser",
    "DenoiseResult",
    "EnergyModel",
    "GaussianEnergy",
    "add_noise",
    "check_images",
    "denoising_loss",
    "noise_normalized_weight",
    "dsm_loss",
    "psnr_in_from_sigma",
    "sample_sigmas",
    "sigma_from_255",
    "sigma_to_255",
    "sigma_to_variance",
    "tsm_loss",
    "variance_to_sigma",
]
