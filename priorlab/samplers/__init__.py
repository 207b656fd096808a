"""Samplers over a ``Denoiser``: the coarse-to-fine adaptive sampler (Algorithm 1)."""

from priorlab.core.energy import energy_denoiser
from priorlab.samplers.adaptive import StepState, ascend, sample_adaptive, step_size

__all__ = ["StepState", "ascend", "energy_denoiser", "sample_adaptive", "step_size"]
