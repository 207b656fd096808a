"""Log-probabilities of images: the one-pass energy estimate and the probability-flow ODE estimate.

Two estimators of −log p(x) in nats per image (ecosystem.md §8.1), both returning a frozen
:class:`LogProbResult` with per-image values, bits/dim, function evaluations and timing:

* :func:`energy_log_prob` — a normalized energy model gives log p(x) = −(U(x, 0) + C) in **one
  network evaluation** per image (algorithms.md §7.4), evaluated in float32 with TF32 off (§7 of
  ecosystem.md: TF32 shifts per-image log-probabilities by nats).
* :func:`ode_log_prob` — any denoiser D(x, σ) defines the variance-exploding probability-flow ODE

      dx/dσ = −σ ∇ log p_σ(x) = (x − D(x, σ))/σ          (Tweedie: ∇ log p_σ = (D − x)/σ²)

  and the instantaneous change of variables d log p_σ(x(σ))/dσ = −div f(x, σ). Integrating from
  σ_min to σ_max (torchdiffeq dopri5) gives

      log p_{σ_min}(x) = log p_{σ_max}(x(σ_max)) + ∫_{σ_min}^{σ_max} div f(x(σ), σ) dσ,

  with p_{σ_max} ≈ N(μ·1, σ_max² I) (see :func:`gaussian_prior_log_prob` for why the mean μ of the
  data belongs there). The divergence is exact (one backward pass per dimension, tiny images) or
  Hutchinson's estimate with Rademacher probes fixed along each trajectory (score_sde_pytorch,
  k-diffusion). Energy models enter through their denoiser y − t ∇_y U(y, t), t = σ².

Nothing here reads files, parses arguments or draws progress bars: a callback receives
:class:`LogProbProgress` after every batch.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from priorlab.core.energy import energy_denoiser, full_precision
from priorlab.core.likelihood import DEQUANTIZATIONS, bits_per_dim, mean_and_stderr

ESTIMATORS = ("energy", "ode")
DIVERGENCES = ("exact", "hutchinson")
MAX_EXACT_DIMS = 1024  # exact divergence costs one backward pass per dimension and function evaluation (32x32 gray)

# Solver defaults of score_sde_pytorch's likelihood.py (RK45, rtol = atol = 1e-5); σ range of EDM.
DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-5
DEFAULT_SIGMA_MIN = 0.002
DEFAULT_SIGMA_MAX = 80.0


@dataclass(frozen=True)
class LogProbProgress:
    """State passed to the progress callback after each batch."""

    estimator: str
    images_done: int
    images_total: int
    nfe: int  # function evaluations of the batch just finished (1 for the energy estimator)


@dataclass(frozen=True)
class LogProbResult:
    """Per-image log-probabilities of a set of images and how they were obtained.

    Attributes:
        estimator: ``"energy"`` or ``"ode"``.
        log_prob: log p(x) per image, (N,) float64, nats (of the dequantized image if dequantized).
        bits_per_dim: −log p(x)/(d ln 2) + log2(levels) per image, (N,) float64.
        mean_bpd: mean bits/dim over the images.
        stderr_bpd: standard error of that mean.
        dims: d = C·H·W.
        nfe_per_batch: network (or ODE right-hand-side) evaluations of each batch.
        batch_sizes: images in each batch.
        seconds: wall-clock time of the evaluation (dequantization included, loading excluded).
        dequantization: ``"none"`` or ``"uniform"``.
        levels: quantization levels behind the bits/dim offset (256), or None for a continuous density.
        settings: estimator, solver and precision settings as plain data (for JSON).
    """

    estimator: str
    log_prob: torch.Tensor
    bits_per_dim: torch.Tensor
    mean_bpd: float
    stderr_bpd: float
    dims: int
    nfe_per_batch: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    seconds: float
    dequantization: str
    levels: int | None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def nll(self) -> torch.Tensor:
        """−log p(x) per image, (N,), nats."""
        return -self.log_prob

    @property
    def num_images(self) -> int:
        return int(self.log_prob.numel())

    @property
    def nfe(self) -> float:
        """Function evaluations per image, averaged over images (1 for the energy estimator)."""
        total = sum(n * b for n, b in zip(self.nfe_per_batch, self.batch_sizes))
        return total / max(1, sum(self.batch_sizes))

    @property
    def images_per_second(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else math.inf


# -- precision -------------------------------------------------------------------------------------


@contextlib.contextmanager
def fp32_precision() -> Iterator[dict[str, Any]]:
    """Full float32 for evaluation: TF32 off for cuDNN convolutions and matmuls, restored afterwards.

    PyTorch enables TF32 for cuDNN convolutions by default; on an H100 that moves per-image energies
    by ~1e-2 nats (ecosystem.md §7). Yields the settings in force, to record with results.

    cuDNN autotuning is on as well (each batch shape picks its fastest float32 convolution algorithm once):
    log_prob at 64×64×3, batch 128, went from 3,654 to 5,048 img/s with it on an H200 (docs/dual_score_matching.md).
    The algorithms differ in rounding only (float32, no TF32).
    """
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = True
        with full_precision():
            yield {"cudnn_allow_tf32": False, "matmul_allow_tf32": False, "float32_matmul_precision": "highest",
                   "autocast": False, "cudnn_benchmark": True}
    finally:
        torch.backends.cudnn.benchmark = saved


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- data ------------------------------------------------------------------------------------------


def prepare_images(images: torch.Tensor, *, dequantization: str = "none", levels: int | None = 256,
                   generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Check images and dequantize them: the continuous points whose density is evaluated.

    Args:
        images: (N, C, H, W) uint8 (0…levels−1), or float in [0, 1] on the grid k/(levels − 1).
            With ``levels=None`` any finite float data are accepted (continuous densities).
        dequantization: ``"none"`` evaluates the density at k/(levels − 1); ``"uniform"`` at
            (k + u)/levels with u ~ U[0, 1) per dimension (score_sde_pytorch's convention), which turns
            the density into a lower bound on the discrete log-probability.
        levels: quantization levels of the data (256 for 8-bit), None for continuous data.
        generator: randomness of the uniform dequantization.
        dtype: floating dtype of the result.

    Returns:
        (N, C, H, W) tensor of ``dtype`` on the images' device.

    Raises:
        ValueError: unknown dequantization, NaN/infinite values, values outside [0, 1] or off the
            8-bit grid while ``levels`` says the data are quantized.
    """
    if dequantization not in DEQUANTIZATIONS:
        raise ValueError(f"dequantization must be one of {DEQUANTIZATIONS}, got {dequantization!r}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("no images")
    if levels is None:
        if dequantization != "none":
            raise ValueError("uniform dequantization needs quantized data (levels, e.g. 256 for 8-bit)")
        if not images.is_floating_point() or not torch.isfinite(images).all():
            raise ValueError("continuous images must be finite floating-point tensors")
        return images.to(dtype)
    if images.dtype == torch.uint8:
        if levels != 256:
            raise ValueError(f"uint8 images are 8-bit data; levels must be 256, got {levels}")
        k = images.to(torch.float64)
    elif images.is_floating_point():
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        if images.min() < 0 or images.max() > 1:
            raise ValueError(f"images must be in [0, 1], got [{images.min().item():.4g}, {images.max().item():.4g}]")
        k = images.to(torch.float64) * (levels - 1)
        off_grid = (k - k.round()).abs().max().item()
        if off_grid > 1e-3:
            raise ValueError(f"images are not {math.log2(levels):g}-bit data (values off the grid k/{levels - 1} "
                             f"by up to {off_grid / (levels - 1):.3g}); bits/dim with the {levels}-level offset "
                             "and dequantization assume quantized data: pass levels=None for continuous data")
        k = k.round()
    else:
        raise ValueError(f"images must be uint8 or floating point, got {images.dtype}")
    if dequantization == "none":
        x = k / (levels - 1)
    else:
        u = torch.rand(k.shape, generator=generator, device=k.device, dtype=torch.float64)
        x = (k + u) / levels
    return x.to(dtype)


# -- the one-pass energy estimator -----------------------------------------------------------------


def _check_float32(model: Any) -> None:
    params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
    dtypes = {p.dtype for p in params}
    if dtypes - {torch.float32}:
        raise ValueError(f"the model's parameters are {sorted(map(str, dtypes))}; log-probabilities are "
                         "evaluated in float32: call model.float() first")


def energy_log_prob(model: Any, images: torch.Tensor, *, batch_size: int = 128, dequantization: str = "none",
                    levels: int | None = 256, generator: torch.Generator | None = None,
                    callback: Callable[[LogProbProgress], None] | None = None) -> LogProbResult:
    """log p(x) of each image from a normalized energy model in one evaluation (algorithms.md §7.4).

    Args:
        model: an ``EnergyModel`` whose ``log_prob(x) -> (B,)`` is the normalized log-density in nats
            (its normalization constant C already calibrated).
        images: (N, C, H, W) uint8 or float on the 8-bit grid (see :func:`prepare_images`); moved in
            batches to the model's device.
        batch_size: images per evaluation.
        dequantization: ``"none"`` (the paper's convention) or ``"uniform"``.
        levels: quantization levels (256), or None for continuous data (bits/dim without offset).
        generator: randomness of the dequantization.
        callback: called with a :class:`LogProbProgress` after each batch.

    Returns:
        A :class:`LogProbResult` with ``estimator="energy"`` and 1 function evaluation per image.

    Raises:
        ValueError: from ``model.log_prob``, e.g. images of another shape (C, H, W) than the one its constant C
            was calibrated for (C depends on d = C·H·W; :class:`~priorlab.core.energy.NormalizedEnergy`).
    """
    if not callable(getattr(model, "log_prob", None)):
        raise TypeError(f"{type(model).__name__} has no log_prob(x): the energy estimator needs a normalized "
                        "energy model; use the ODE estimator for denoisers")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _check_float32(model)
    _dims(images)
    device = _model_device(model, images)
    _sync(device)
    start = time.perf_counter()
    out, sizes, n = [], [], images.shape[0]
    with fp32_precision() as precision, torch.no_grad(), torch.autocast(device.type, enabled=False):
        for i in range(0, n, batch_size):
            # Batch by batch: a float copy of all of ImageNet64 val would take 2.4 GB.
            x = prepare_images(images[i:i + batch_size], dequantization=dequantization, levels=levels,
                               generator=generator).to(device)
            lp = model.log_prob(x)
            if lp.shape != (x.shape[0],):
                raise ValueError(f"log_prob returned shape {tuple(lp.shape)}, expected ({x.shape[0]},)")
            out.append(lp.detach().to(torch.float64).cpu())
            sizes.append(x.shape[0])
            if callback is not None:
                callback(LogProbProgress("energy", i + x.shape[0], n, 1))
    _sync(device)
    seconds = time.perf_counter() - start
    return _result("energy", torch.cat(out), _dims(images), (1,) * len(sizes), tuple(sizes), seconds, dequantization,
                   levels, {"batch_size": batch_size, "precision": precision, "device": str(device)})


def _model_device(model: Any, images: torch.Tensor) -> torch.device:
    if isinstance(model, torch.nn.Module):
        p = next(iter(model.parameters()), None)
        if p is not None:
            return p.device
    return images.device


def _dims(images: torch.Tensor) -> int:
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N, C, H, W) with N >= 1, got {tuple(images.shape)}")
    return int(images[0].numel())


def _result(estimator: str, log_prob: torch.Tensor, dims: int, nfe: tuple[int, ...], sizes: tuple[int, ...],
            seconds: float, dequantization: str, levels: int | None, settings: dict[str, Any]) -> LogProbResult:
    if not torch.isfinite(log_prob).all():
        bad = int((~torch.isfinite(log_prob)).sum())
        raise ValueError(f"the {estimator} estimator gave non-finite log-probabilities for {bad} image(s)")
    bpd = bits_per_dim(-log_prob, dims, levels=levels)
    mean, stderr = mean_and_stderr(bpd)
    settings = {"estimator": estimator, "dequantization": dequantization, "levels": levels, **settings}
    return LogProbResult(estimator, log_prob, bpd, mean, stderr, dims, nfe, sizes, seconds, dequantization,
                         levels, settings)


# -- the probability-flow ODE estimator ------------------------------------------------------------


@dataclass(frozen=True)
class FlowResult:
    """End of one probability-flow integration.

    Attributes:
        x: state at ``sigma_to``, (B, C, H, W).
        delta_log_prob: log p_{σ_from}(x_from) − log p_{σ_to}(x_to) = ∫ div f dσ per image, (B,), nats.
        nfe: right-hand-side evaluations of the solver.
    """

    x: torch.Tensor
    delta_log_prob: torch.Tensor
    nfe: int


def probability_flow(denoiser: Any, x: torch.Tensor, sigma_from: float, sigma_to: float, *,
                     divergence: str = "hutchinson", probes: int = 1, rtol: float = DEFAULT_RTOL,
                     atol: float = DEFAULT_ATOL, generator: torch.Generator | None = None) -> FlowResult:
    """Integrate the VE probability-flow ODE dx/dσ = (x − D(x, σ))/σ and the log-density change.

    Works in either direction (σ_to < σ_from integrates backward, e.g. to sample or to check
    consistency). The state is (x, ∫ div f dσ); torchdiffeq's dopri5 controls the error of both; NFE
    counts right-hand-side evaluations (each one denoiser call plus its backward passes).

    Args:
        denoiser: ``Denoiser`` ``(y, sigma) -> x̂``; σ is passed as a (B,) tensor. Energy models are
            wrapped in ``core.energy.energy_denoiser`` by :func:`ode_log_prob`.
        x: start state at ``sigma_from``, (B, C, H, W); its dtype is the integration dtype.
        sigma_from: σ at the start (> 0).
        sigma_to: σ at the end (> 0).
        divergence: ``"exact"`` (one backward pass per dimension, ≤ MAX_EXACT_DIMS) or ``"hutchinson"``.
        probes: Rademacher probes per image for Hutchinson's estimate, fixed along the trajectory so
            that the estimate of the integral is unbiased.
        rtol: relative tolerance of dopri5.
        atol: absolute tolerance of dopri5.
        generator: randomness of the probes (any device; a CPU generator reproduces across devices).

    Returns:
        A :class:`FlowResult`.
    """
    from torchdiffeq import odeint

    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    if sigma_from <= 0 or sigma_to <= 0:
        raise ValueError(f"noise levels must be positive, got {sigma_from} and {sigma_to}")
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    b, dims = x.shape[0], int(x[0].numel())
    if divergence == "exact" and dims > MAX_EXACT_DIMS:
        raise ValueError(f"exact divergence needs one backward pass per dimension; {dims} > {MAX_EXACT_DIMS} "
                         "dimensions is too many (hours on a CPU): use the Hutchinson estimator "
                         "(--divergence hutchinson)")
    eps = None
    if divergence == "hutchinson":
        # Rademacher probes ±1 (lower variance than Gaussian ones), drawn once per trajectory.
        # Drawn where the generator lives (a CPU generator gives the same probes on every device).
        where = generator.device if generator is not None else x.device
        bits = torch.randint(0, 2, (probes, *x.shape), generator=generator, device=where)
        eps = (2 * bits - 1).to(device=x.device, dtype=x.dtype)
    nfe = 0

    def rhs(sigma: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal nfe
        nfe += 1
        with torch.enable_grad():
            y = state[0].detach().requires_grad_(True)
            drift = (y - denoiser(y, sigma.to(y.dtype).expand(b)).to(y.dtype)) / sigma  # dx/dσ = (x − D)/σ
            if divergence == "exact":
                flat = drift.reshape(b, dims)
                div = torch.zeros(b, dtype=y.dtype, device=y.device)
                for i in range(dims):  # ∂f_i/∂x_i, one backward pass each
                    (g,) = torch.autograd.grad(flat[:, i].sum(), y, retain_graph=True)
                    div = div + g.reshape(b, dims)[:, i]
            else:
                div = torch.zeros(b, dtype=y.dtype, device=y.device)
                for k in range(probes):  # Hutchinson: div f ≈ εᵀ (∂f/∂x) ε, one VJP per probe
                    (g,) = torch.autograd.grad(drift, y, eps[k], retain_graph=k + 1 < probes)
                    div = div + (g * eps[k]).reshape(b, dims).sum(1)
                div = div / probes
        return drift.detach(), div.detach()

    t = torch.tensor([sigma_from, sigma_to], dtype=x.dtype, device=x.device)
    acc0 = torch.zeros(b, dtype=x.dtype, device=x.device)
    # step_t: land on the end point; by default torchdiffeq steps past it and interpolates, which going
    # down in σ would evaluate the denoiser at σ < 0.
    xs, accs = odeint(rhs, (x, acc0), t, method="dopri5", rtol=rtol, atol=atol, options={"step_t": t})
    # d log p_σ(x(σ))/dσ = −div f, so log p_from − log p_to = ∫_{from}^{to} div f dσ = acc(to).
    return FlowResult(xs[-1], accs[-1], nfe)


def gaussian_prior_log_prob(x: torch.Tensor, sigma: float, mean: float | torch.Tensor = 0.0) -> torch.Tensor:
    """log N(x; μ, σ² I) per image, (B,), nats: the end point of the VE probability flow.

    Why the data mean μ: p_σ(y) = E_x N(y; x, σ²I) = N(y; μ, σ²I)·E_x exp(⟨y−μ, x−μ⟩/σ² − ‖x−μ‖²/(2σ²)).
    The first-order term has zero mean, so centring at μ leaves an error of order d·Var(x)/σ²; centring
    at 0 (as k-diffusion does) adds ⟨y, μ⟩/σ² − ‖μ‖²/(2σ²), first order in 1/σ, i.e. a per-image error
    of order √d·|μ|/σ_max (algorithms.md §7.8 gives p_σ = N(μ, Σ + σ²I) exactly for Gaussian data).
    A denoiser trained on data of mean μ flows to D(x, σ_max) ≈ μ, so only N(μ, σ_max² I) is consistent
    with the model; both agree as σ_max → ∞.
    """
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device)
    dims = x[0].numel()
    sq = (x - mean).pow(2).flatten(1).sum(1)
    return -0.5 * sq / sigma**2 - 0.5 * dims * math.log(2 * math.pi * sigma**2)


def ode_log_prob(model: Any, images: torch.Tensor, *, batch_size: int = 16, divergence: str = "hutchinson",
                 probes: int = 1, sigma_min: float = DEFAULT_SIGMA_MIN, sigma_max: float = DEFAULT_SIGMA_MAX,
                 prior_mean: float | torch.Tensor = 0.0, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL,
                 dequantization: str = "none", levels: int | None = 256, dtype: torch.dtype = torch.float32,
                 generator: torch.Generator | None = None,
                 callback: Callable[[LogProbProgress], None] | None = None) -> LogProbResult:
    """log p(x) of each image through the probability-flow ODE of any denoiser (ecosystem.md §8.1).

    Returns log p_{σ_min}(x) = log N(x(σ_max); μ, σ_max² I) + ∫_{σ_min}^{σ_max} div f dσ, the density of
    the data blurred by noise σ_min (for σ_min → 0 the clean-image density).

    Args:
        model: a ``Denoiser`` ``(y, sigma) -> x̂`` (blind or σ-conditioned), or an energy model (anything
            with ``energy(y, t)``), used through its denoiser y − t ∇_y U (``core.energy.energy_denoiser``).
        images: (N, C, H, W) uint8 or float on the 8-bit grid (or continuous with ``levels=None``).
        batch_size: images integrated together (the adaptive step is shared by a batch).
        divergence: ``"exact"`` or ``"hutchinson"``.
        probes: Rademacher probes per image (Hutchinson).
        sigma_min: σ at which the density is reported ([0, 1] units); EDM's 0.002 by default.
        sigma_max: σ of the Gaussian prior; must be large against the data's spread and within the
            noise range the model was trained on.
        prior_mean: μ of the Gaussian prior N(μ, σ_max² I): a float (per pixel) or a (C, H, W) tensor;
            the data mean is consistent (see :func:`gaussian_prior_log_prob`).
        rtol: relative tolerance of dopri5 (score_sde's 1e-5 by default; k-diffusion uses 1e-4).
        atol: absolute tolerance of dopri5.
        dequantization: ``"none"`` or ``"uniform"`` (see :func:`prepare_images`).
        levels: quantization levels (256), or None for continuous data.
        dtype: floating dtype of the integration (float32; float64 for reference checks).
        generator: randomness of the dequantization (on the images' device) and of the probes.
        callback: called with a :class:`LogProbProgress` after each batch.

    Returns:
        A :class:`LogProbResult` with ``estimator="ode"``.
    """
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"the ODE solver's tolerances must be > 0, got rtol={rtol} and atol={atol}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    denoiser = energy_denoiser(model, differentiable=True) if callable(getattr(model, "energy", None)) else model
    if not callable(denoiser):
        raise TypeError(f"{type(model).__name__} is neither a denoiser nor an energy model")
    if dtype == torch.float32:
        _check_float32(model)
    _dims(images)
    device = _model_device(model, images)
    _sync(device)
    start = time.perf_counter()
    out, nfes, sizes, n = [], [], [], images.shape[0]
    with fp32_precision() as precision, torch.autocast(device.type, enabled=False):
        for i in range(0, n, batch_size):
            x = prepare_images(images[i:i + batch_size], dequantization=dequantization, levels=levels,
                               generator=generator, dtype=dtype).to(device)
            flow = probability_flow(denoiser, x, sigma_min, sigma_max, divergence=divergence, probes=probes,
                                    rtol=rtol, atol=atol, generator=generator)
            lp = gaussian_prior_log_prob(flow.x, sigma_max, prior_mean) + flow.delta_log_prob
            out.append(lp.detach().to(torch.float64).cpu())
            nfes.append(flow.nfe)
            sizes.append(x.shape[0])
            if callback is not None:
                callback(LogProbProgress("ode", i + x.shape[0], n, flow.nfe))
    _sync(device)
    seconds = time.perf_counter() - start
    mean = prior_mean.tolist() if isinstance(prior_mean, torch.Tensor) and prior_mean.numel() > 1 else float(prior_mean)
    settings = {"solver": "torchdiffeq dopri5", "rtol": rtol, "atol": atol, "sigma_min": sigma_min,
                "sigma_max": sigma_max, "prior": "N(prior_mean, sigma_max^2 I)", "prior_mean": mean,
                "divergence": divergence, "probes": probes if divergence == "hutchinson" else None,
                "probe_distribution": "rademacher" if divergence == "hutchinson" else None,
                "model_through": "energy gradient (y - t grad U)" if denoiser is not model else "denoiser",
                "batch_size": batch_size, "dtype": str(dtype).replace("torch.", ""), "precision": precision,
                "device": str(device)}
    return _result("ode", torch.cat(out), _dims(images), tuple(nfes), tuple(sizes), seconds, dequantization, levels,
                   settings)
