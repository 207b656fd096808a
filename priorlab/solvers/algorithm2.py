"""Linear inverse problems with the prior implicit in a denoiser (Algorithm 2, algorithms.md §5).

Measurements c = Mᵀx = ``operator.measure(x)`` with orthonormal rows; P = MMᵀ = ``operator.project``.
The coarse-to-fine ascent of Algorithm 1 runs with the constrained direction

    d(y) = (I − P) f(y) + M (c − Mᵀy)                                           (§5.1)

— the prior's pull in the null space of Mᵀ plus a pull of the measured components towards c.

Which output satisfies the measurements: the last iterate y satisfies them up to the residual
noise of the last step (≈ σ_final), and the final one-shot denoise x̂ = y + f(y) is unconstrained
(trap §13.8). With ``reproject=True`` (default) the returned samples are re-projected,
(I − P)x̂ + Mc, so that ``measure(sample) = c`` holds to round-off; ``measurement_error`` reports
the deviation of x̂ before re-projection.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from priorlab.core.results import SolveResult
from priorlab.samplers.adaptive import StepState, ascend
from priorlab.solvers.operators import LinearOperator


def solve_linear(denoiser, operator: LinearOperator, measurement: torch.Tensor, *, num_samples: int = 1,
                 h0: float = 0.01, beta: float = 0.01, sigma0: float = 1.0, sigma_final: float = 0.01,
                 init_mean: float = 0.5, max_steps: int = 2000, guard: float = 2.0, reproject: bool = True,
                 generator: torch.Generator | None = None,
                 callback: Callable[[StepState], None] | None = None) -> SolveResult:
    """Draw ``num_samples`` reconstructions of every measurement (Algorithm 2, algorithms.md §5.2).

    The B·S chains run as one batch with per-sample step counts and stopping (as in
    :func:`priorlab.samplers.sample_adaptive`).

    Args:
        denoiser: ``Denoiser`` (y, sigma) -> x̂ in eval mode.
        operator: the measurement operator (orthonormal rows), built for the image shape (C, H, W).
        measurement: c = operator.measure(x), shape (B, *operator.measurement_shape).
        num_samples: S, reconstructions per measurement; their mean approximates E[x | c] and their
            std is a per-pixel uncertainty.
        h0, sigma0, sigma_final, max_steps, guard: as in ``sample_adaptive``.
        beta: β; the 2021 demo uses 0.01 for all inverse problems (more noise, more steps).
        init_mean: m; y₀ ~ N(m(I − P)1 + Mc, σ₀²I) (Alg. 2 initialization, 2021 code).
        reproject: return (I − P)x̂ + Mc instead of the unconstrained final denoise x̂.
        generator: randomness of y₀ and of the injected noise (on the device of ``measurement``).
        callback: receives a ``StepState`` (over the B·S chains) after every step.

    Returns:
        :class:`SolveResult` with samples (B, S, C, H, W), mean, std and per-chain diagnostics.
    """
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator must be a priorlab LinearOperator (e.g. box_inpainting(shape)), got "
                        f"{type(operator).__name__}")
    operator.check_measurement(measurement)
    if not measurement.is_floating_point() or not torch.isfinite(measurement).all():
        raise ValueError("the measurement must be floating-point without NaN or infinite values")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    batch = measurement.shape[0]
    c = measurement.repeat_interleave(num_samples, dim=0)  # chain b·S + s measures measurement b
    shape = (c.shape[0], *operator.image_shape)
    mc = operator.embed(c)  # M c
    ones = torch.ones(shape, dtype=c.dtype, device=c.device)
    noise = torch.randn(shape, generator=generator, dtype=c.dtype, device=c.device)
    # Alg. 2 initialization: y₀ ~ N(m(I − MMᵀ)1 + Mc, σ₀²I)
    y0 = init_mean * (ones - operator.project(ones)) + mc + sigma0 * noise

    def direction(y: torch.Tensor, f: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        # §5.1: d = (I − MMᵀ) f(y) + M(c − Mᵀy)
        return f - operator.project(f) + operator.embed(c[rows] - operator.measure(y))

    out = ascend(denoiser, y0, direction=direction, h0=h0, beta=beta, sigma0=sigma0, sigma_final=sigma_final,
                 max_steps=max_steps, generator=generator, guard=guard, callback=callback,
                 params=dict(algorithm="Algorithm 2", init_mean=init_mean, reproject=reproject,
                             operator=repr(operator), num_samples=num_samples))
    x_hat = out.images
    error = (operator.measure(x_hat) - c).flatten(1).norm(dim=1) / math.sqrt(operator.num_measurements)
    if reproject:
        x_hat = x_hat - operator.project(x_hat) + mc  # (I − MMᵀ)x̂ + Mc
    samples = x_hat.view(batch, num_samples, *operator.image_shape)
    std = samples.std(dim=1) if num_samples > 1 else torch.zeros_like(samples[:, 0])

    def per_chain(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, num_samples, *t.shape[1:])

    return SolveResult(samples=samples, mean=samples.mean(dim=1), std=std,
                       measurement_error=per_chain(error.cpu()), steps=per_chain(out.steps),
                       sigmas=per_chain(out.sigmas), final_sigma=per_chain(out.final_sigma),
                       converged=per_chain(out.converged), diverged=per_chain(out.diverged), params=out.params)
