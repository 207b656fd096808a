"""Coarse-to-fine stochastic ascent (Kadkhodaie & Simoncelli; algorithms.md §4, Algorithm 1).

A blind least-squares denoiser gives f(y) = x̂(y) − y = σ²∇log p_σ(y) at whatever noise level y has,
and ‖f(y)‖/√N estimates that level. Starting from noise, the sampler takes partial steps along f
and injects fresh noise so that the effective noise level shrinks by (1 − βh_t) per step.

The loop :func:`ascend` is shared with the constrained solver (Algorithm 2, :mod:`priorlab.solvers`),
which only changes the initial point and the ascent direction.

Choices fixed here (trap §13.7 asks to record them; they are returned in ``params``):

* increasing step schedule h_t = h₀t/(1 + h₀(t − 1)) (2021 repository);
* per-sample stopping rule σ_t ≤ σ_final, checked *after* the update that produced σ_t, exactly as
  the reference ``while σ > σ_L`` loop: the step count is the number of updates;
* initial mean m = 0.5 (2021 code), y₀ ~ N(m·1, σ₀²I);
* guard: a sample whose σ_t exceeds ``guard``·σ₀ (default 2, the single-image guard of the code) is
  frozen and flagged as diverged rather than raising, so the rest of the batch still finishes;
* the denoiser is called with ``sigma`` = the tracked noise level s_t of its input, per sample, for
  conditional denoisers (blind ones ignore it): s₀ = σ₀, s_t² = (1 − h_t)²s_{t−1}² + γ_t²
  (the step removes the fraction h_t of the noise and injects γ_t). With a blind denoiser that
  removes all the noise, s_t = (1 − βh_t)σ_t as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from priorlab.core.results import SampleResult

# direction(y, residual, rows) -> d: the ascent direction for the active samples ``rows`` of the batch.
Direction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class StepState:
    """What a ``callback`` receives after every step.

    Attributes:
        step: t, the number of updates done so far (1 after the first).
        sigma: σ_t per sample (B,), NaN for samples that had already stopped.
        active: (B,) bool, samples still running after this step.
        h: step size h_t.
        gamma: injected noise std γ_t per sample (B,), NaN for stopped samples.
    """

    step: int
    sigma: torch.Tensor
    active: torch.Tensor
    h: float
    gamma: torch.Tensor


def step_size(t: int, h0: float) -> float:
    """h_t = h₀·t / (1 + h₀·(t − 1)), growing from h₀ towards 1 (Alg. 1, step 2)."""
    return h0 * t / (1 + h0 * (t - 1))


def _check_params(h0: float, beta: float, sigma0: float, sigma_final: float, max_steps: int,
                  guard: float = 2.0) -> None:
    if not 0 < h0 <= 1:
        raise ValueError(f"h0 must be in (0, 1], got {h0}")
    if not 0 < beta <= 1:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    if not sigma0 > sigma_final > 0:
        raise ValueError(f"need sigma0 > sigma_final > 0, got sigma0={sigma0}, sigma_final={sigma_final}")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
    if not guard > 1:
        raise ValueError(f"guard must be > 1 (a sample whose noise estimate exceeds guard·sigma0 is stopped as "
                         f"diverged), got {guard}")


def _denoise(denoiser, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return denoiser(y, sigma=sigma)


def ascend(denoiser, y0: torch.Tensor, *, direction: Direction | None, h0: float, beta: float, sigma0: float,
           sigma_final: float, max_steps: int, generator: torch.Generator | None, guard: float = 2.0,
           callback: Callable[[StepState], None] | None = None, return_trajectory: bool = False,
           params: dict | None = None) -> SampleResult:
    """The coarse-to-fine ascent loop from a given initial point (Alg. 1, step 2; Alg. 2 with ``direction``).

    Args:
        denoiser: ``Denoiser`` (y, sigma) -> x̂, in eval mode; called under ``torch.no_grad``.
        y0: initial images (B, C, H, W).
        direction: maps (y, f(y), rows) of the active samples to the ascent direction d_t; None
            for the unconstrained d_t = f(y) of Algorithm 1.
        h0, beta, sigma0, sigma_final, max_steps, guard: see :func:`sample_adaptive`.
        generator: source of the injected noise (on the device of ``y0``).
        callback: called with a :class:`StepState` after every step.
        return_trajectory: keep y after every step (T + 1, B, C, H, W) on the CPU.
        params: extra entries for the result's ``params``.

    Returns:
        A :class:`SampleResult`; ``images`` is x̂ = y + f(y) of the final iterate (one last denoise,
        Alg. 1, step 3; for Algorithm 2 this final denoise is unconstrained).
    """
    _check_params(h0, beta, sigma0, sigma_final, max_steps, guard)
    if not y0.is_floating_point() or not torch.isfinite(y0).all():
        raise ValueError("the starting images must be floating-point without NaN or infinite values")
    if y0.ndim != 4 or y0.shape[0] == 0:
        raise ValueError(f"need a non-empty batch of images (B, C, H, W) with B >= 1, got shape {tuple(y0.shape)}")
    if isinstance(denoiser, torch.nn.Module) and denoiser.training:
        # Trap §13.3: bias-free batch norm is only homogeneous (and deterministic) with running statistics.
        raise ValueError("the denoiser is in training mode; call denoiser.eval() before sampling")
    batch = y0.shape[0]
    n = math.prod(y0.shape[1:])
    y = y0.clone()
    active = torch.ones(batch, dtype=torch.bool, device=y.device)
    diverged = torch.zeros_like(active)
    steps = torch.zeros(batch, dtype=torch.long, device=y.device)
    sigma_in = torch.full((batch,), float(sigma0), dtype=y.dtype, device=y.device)  # noise level of y
    history: list[torch.Tensor] = []
    trajectory = [y0.detach().clone().cpu()] if return_trajectory else None
    t = 0
    while active.any() and t < max_steps:
        t += 1
        h = step_size(t, h0)  # Alg. 1, step 2: h_t
        rows = active.nonzero().squeeze(1)
        ya = y[rows]
        f = _denoise(denoiser, ya, sigma_in[rows]) - ya  # f(y) = x̂(y) − y
        d = f if direction is None else direction(ya, f, rows)  # d_t (Alg. 2: constrained)
        sigma = d.flatten(1).norm(dim=1) / math.sqrt(n)  # σ_t = ‖d_t‖/√N
        gamma = sigma * math.sqrt((1 - beta * h) ** 2 - (1 - h) ** 2)  # γ_t
        # Drawn for the whole batch every step, so a sample's noise does not depend on when others stop.
        z = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        y[rows] = ya + h * d + gamma.view(-1, 1, 1, 1) * z[rows]  # y_t = y_{t−1} + h_t d_t + γ_t z_t
        steps[rows] += 1
        # Noise left in y_t for the next call's ``sigma``: the step keeps (1 − h_t) of the old noise and
        # adds γ_t. Not (1 − βh_t)σ_t: σ_t = ‖d_t‖/√N underestimates the noise where the denoiser
        # keeps part of it, and a σ-conditional denoiser told too small a σ under-denoises.
        sigma_in[rows] = torch.sqrt((1 - h) ** 2 * sigma_in[rows] ** 2 + gamma**2)
        full_sigma = torch.full((batch,), math.nan, dtype=y.dtype, device=y.device)
        full_sigma[rows] = sigma
        full_gamma = torch.full_like(full_sigma, math.nan)
        full_gamma[rows] = gamma
        history.append(full_sigma)
        bad = ~torch.isfinite(sigma) | (sigma > guard * sigma0)
        diverged[rows[bad]] = True
        active[rows[(sigma <= sigma_final) | bad]] = False  # per-sample stopping: frozen from now on
        if trajectory is not None:  # a copy: on the CPU .cpu() returns y itself, which the next step changes
            trajectory.append(y.detach().clone().cpu())
        if callback is not None:
            callback(StepState(step=t, sigma=full_sigma, active=active.clone(), h=h, gamma=full_gamma))
    sigmas = torch.stack(history, dim=1)  # (B, T); the loop runs at least once
    final_sigma = sigmas.gather(1, (steps - 1)[:, None])[:, 0]  # σ_t of each sample's last update
    x_hat = _denoise(denoiser, y, sigma_in)  # Alg. 1, step 3: x̂ = y + f(y)
    converged = (final_sigma <= sigma_final) & ~diverged
    record = dict(h0=h0, beta=beta, sigma0=sigma0, sigma_final=sigma_final, max_steps=max_steps,
                  guard=guard, schedule="increasing h_t = h0 t / (1 + h0 (t - 1))",
                  stopping="per-sample sigma_t <= sigma_final")
    record.update(params or {})
    return SampleResult(images=x_hat, last_iterate=y, steps=steps.cpu(), sigmas=sigmas.cpu(),
                        final_sigma=final_sigma.cpu(), converged=converged.cpu(), diverged=diverged.cpu(),
                        params=record, trajectory=None if trajectory is None else torch.stack(trajectory))


def sample_adaptive(denoiser, shape: tuple[int, int, int, int] | None = None, *, x_init: torch.Tensor | None = None,
                    h0: float = 0.01, beta: float = 0.5, sigma0: float = 1.0, sigma_final: float = 0.01,
                    init_mean: float = 0.5, max_steps: int = 1000, guard: float = 2.0,
                    generator: torch.Generator | None = None, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32, callback: Callable[[StepState], None] | None = None,
                    return_trajectory: bool = False) -> SampleResult:
    """Draw images from the prior implicit in a denoiser (Algorithm 1, algorithms.md §4.2).

    Args:
        denoiser: ``Denoiser`` (y, sigma) -> x̂ in eval mode (blind networks, conditional
            denoisers that use σ, or an energy model's denoiser via :func:`priorlab.core.energy.energy_denoiser`).
        shape: (B, C, H, W) of the batch to draw; y₀ ~ N(init_mean·1, σ₀²I) (Alg. 1, step 1).
        x_init: instead of ``shape``, the initial images y₀ (B, C, H, W) themselves.
        h0: initial step size h₀ ∈ (0, 1].
        beta: β ∈ (0, 1]; the effective noise shrinks by (1 − βh_t) per step; β = 1 injects no noise.
        sigma0: σ₀, std of the initial noise, [0, 1] units.
        sigma_final: σ_L; a sample stops once σ_t ≤ σ_final.
        init_mean: m, the mean of y₀ (0.5, the 2021 code's default).
        max_steps: cap on the number of updates (samples still running then are not converged).
        guard: a sample with σ_t > guard·σ₀ is stopped and flagged ``diverged`` ("not converging").
        generator: randomness of y₀ and of the injected noise (on ``device``); results reproduce bit
            for bit on the CPU for a given generator state.
        device, dtype: where and in which dtype to draw y₀ (ignored with ``x_init``).
        callback: receives a :class:`StepState` after every step (for progress bars and plots).
        return_trajectory: also return y after every step.

    Returns:
        :class:`SampleResult` with ``images`` (B, C, H, W) = x̂ of the last iterate (not clipped),
        per-sample ``steps``, σ_t histories ``sigmas`` (B, T) and ``converged``/``diverged`` flags.
    """
    if (shape is None) == (x_init is None):
        raise ValueError("give exactly one of shape (B, C, H, W) and x_init")
    if x_init is None:
        if len(shape) != 4 or min(shape) < 1:
            raise ValueError(f"shape must be (B, C, H, W) with positive sizes, got {tuple(shape)}")
        noise = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
        y0 = init_mean + sigma0 * noise  # Alg. 1, step 1: y₀ ~ N(m·1, σ₀²I)
    else:
        if x_init.ndim != 4:
            raise ValueError(f"x_init must have shape (B, C, H, W), got {tuple(x_init.shape)}")
        y0 = x_init
    return ascend(denoiser, y0, direction=None, h0=h0, beta=beta, sigma0=sigma0, sigma_final=sigma_final,
                  max_steps=max_steps, generator=generator, guard=guard, callback=callback,
                  return_trajectory=return_trajectory,
                  params=dict(init_mean=init_mean if x_init is None else None, algorithm="Algorithm 1"))
