"""Log-probability estimators against closed-form Gaussian fields (ecosystem.md §8.5, algorithms.md §7.8)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from priorlab.benchmarks.logp import (
    energy_log_prob,
    gaussian_prior_log_prob,
    ode_log_prob,
    prepare_images,
    probability_flow,
)
from priorlab.core.energy import energy_denoiser, tf32_enabled
from priorlab.core.gaussian_field import GaussianField
from priorlab.core.likelihood import LN2

pytestmark = pytest.mark.usefixtures("one_thread")

SIGMA_MIN, SIGMA_MAX = 1e-3, 50.0


class GaussianEnergy(nn.Module):
    """EnergyModel of a Gaussian field: U(y, t) = −log p_t(y) + offset, normalized by a constant C.

    ``offset`` plays the unknown constant of a trained energy; ``log_prob = −(U(x, 0) + C)``.
    """

    def __init__(self, field: GaussianField, offset: float = 123.25) -> None:
        super().__init__()
        self.field, self.offset, self.C = field, offset, 0.0
        self.seen_tf32: list[bool] = []
        self.seen_cudnn_benchmark: list[bool] = []

    def energy(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.field.energy(y, t) + self.offset

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_tf32.append(tf32_enabled())
        self.seen_cudnn_benchmark.append(torch.backends.cudnn.benchmark)
        return -(self.energy(x, torch.zeros(x.shape[0], dtype=x.dtype)) + self.C)

    def forward(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return energy_denoiser(self, differentiable=True)(y, sigma)

    def calibrate(self, n: int, t_max: float, generator: torch.Generator) -> None:
        """C = (d/2) ln(2πe t_max) − E_y[U(y, t_max)] over noisy samples (algorithms.md §7.4)."""
        y = self.field.sample(n, generator, dtype=torch.float64)
        y = y + math.sqrt(t_max) * torch.randn(y.shape, generator=generator, dtype=torch.float64)
        mean_u = self.energy(y, torch.full((n,), t_max, dtype=torch.float64)).mean()
        self.C = float(0.5 * self.field.num_pixels * math.log(2 * math.pi * math.e * t_max) - mean_u)


@pytest.fixture(scope="module")
def field() -> GaussianField:
    return GaussianField(4, alpha=2.0, variance=0.01, channels=1, mean=0.5)


@pytest.fixture(scope="module")
def samples(field) -> torch.Tensor:
    return field.sample(8, torch.Generator().manual_seed(0), dtype=torch.float64)


def _ode(denoiser, x, **kw):
    args = dict(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, prior_mean=0.5, levels=None, dtype=torch.float64,
                batch_size=8, divergence="exact")
    args.update(kw)
    return ode_log_prob(denoiser, x, **args)


def test_ode_exact_divergence_matches_closed_form(field, samples):
    res = _ode(field.wiener_denoise, samples)
    exact = field.log_prob_noisy(samples, SIGMA_MIN)
    # A sign error, a factor 2 in the divergence or a wrong prior term move this by tens of nats.
    assert (res.log_prob - exact).abs().max() < 0.01
    assert (res.log_prob - field.log_prob(samples)).abs().max() < 0.05  # σ_min = 1e-3 ≈ the clean density
    assert torch.allclose(res.bits_per_dim, -res.log_prob / (16 * LN2))  # levels=None: no +8
    assert res.estimator == "ode" and res.nfe > 10 and res.settings["divergence"] == "exact"
    assert res.num_images == 8 and res.seconds > 0


def test_ode_hutchinson_matches_closed_form(field):
    x = field.sample(16, torch.Generator().manual_seed(1), dtype=torch.float64)
    res = _ode(field.wiener_denoise, x, divergence="hutchinson", probes=64, batch_size=16, rtol=1e-4, atol=1e-4,
               generator=torch.Generator().manual_seed(2))
    diff = res.log_prob - field.log_prob_noisy(x, SIGMA_MIN)
    stderr = diff.std() / 4
    assert diff.std() < 0.5  # 64 Rademacher probes: the per-image noise is a fraction of a nat
    assert diff.mean().abs() < 4 * stderr + 0.02  # unbiased
    assert res.settings["probes"] == 64 and res.settings["probe_distribution"] == "rademacher"


def test_prior_centred_on_the_data_mean(field, samples):
    # At a moderate σ_max the 0-centred prior is off by ≈ d μ²/(2σ²) = 0.5 nats; N(μ, σ²I) is not.
    exact = field.log_prob_noisy(samples, SIGMA_MIN)
    centred = _ode(field.wiener_denoise, samples, sigma_max=2.0).log_prob
    at_zero = _ode(field.wiener_denoise, samples, sigma_max=2.0, prior_mean=0.0).log_prob
    assert (centred - exact).abs().mean() < 0.05
    assert (at_zero - exact).abs().mean() > 0.3


def test_gaussian_prior_log_prob_is_the_normal_density():
    x = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    ref = torch.distributions.Normal(0.5, 3.0).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(gaussian_prior_log_prob(x, 3.0, 0.5), ref)


def test_forward_backward_consistency_of_the_flow(field, samples):
    fwd = probability_flow(field.wiener_denoise, samples, SIGMA_MIN, SIGMA_MAX, divergence="exact")
    bwd = probability_flow(field.wiener_denoise, fwd.x, SIGMA_MAX, SIGMA_MIN, divergence="exact")
    assert (bwd.x - samples).abs().max() < 1e-3
    assert (fwd.delta_log_prob + bwd.delta_log_prob).abs().max() < 1e-3
    assert fwd.delta_log_prob.abs().min() > 10  # the test is not trivially satisfied


def test_forward_backward_consistency_with_a_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 1, 3, padding=1)).double()
    denoiser = lambda y, sigma: y - 0.1 * net(y)  # noqa: E731
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    kw = dict(divergence="hutchinson", probes=2)
    fwd = probability_flow(denoiser, x, 0.01, 1.0, generator=torch.Generator().manual_seed(3), **kw)
    bwd = probability_flow(denoiser, fwd.x, 1.0, 0.01, generator=torch.Generator().manual_seed(3), **kw)
    assert (bwd.x - x).abs().max() < 1e-3
    assert (fwd.delta_log_prob + bwd.delta_log_prob).abs().max() < 1e-3


def test_energy_estimator_reproduces_closed_form(field, samples):
    model = GaussianEnergy(field)
    model.C = -model.offset  # the exact constant
    res = energy_log_prob(model, samples, levels=None, batch_size=3)
    exact = field.log_prob(samples.float())
    assert torch.allclose(res.log_prob, exact.double(), atol=1e-4)
    assert res.nfe == 1 and res.batch_sizes == (3, 3, 2) and res.estimator == "energy"
    # Calibrated as in the paper (Gaussian limit at t_max = 1e3): Monte-Carlo error of C only.
    model.calibrate(40000, 1e3, torch.Generator().manual_seed(4))
    assert abs(model.C + model.offset) < 0.1
    res = energy_log_prob(model, samples, levels=None)
    assert (res.log_prob - exact.double()).abs().max() < 0.1


def test_energy_estimator_on_8bit_images(field):
    model = GaussianEnergy(field)
    model.C = -model.offset
    u8 = (field.sample(5, torch.Generator().manual_seed(5)) * 255).round().clamp(0, 255).to(torch.uint8)
    res = energy_log_prob(model, u8)
    x = u8.float() / 255
    assert torch.allclose(res.log_prob, field.log_prob(x).double(), atol=1e-4)
    # bits/dim: 8-bit convention, −log p/(d ln 2) + 8
    assert torch.allclose(res.bits_per_dim, -res.log_prob / (16 * LN2) + 8)
    assert res.mean_bpd == pytest.approx(float(res.bits_per_dim.mean()))


def test_energy_estimator_turns_tf32_off_autotuning_on_and_restores_both(field, samples):
    model = GaussianEnergy(field)
    before = torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = True, False
    try:
        res = energy_log_prob(model, samples, levels=None)
        assert model.seen_tf32 == [False] and model.seen_cudnn_benchmark == [True]
        assert torch.backends.cudnn.allow_tf32 is True and torch.backends.cudnn.benchmark is False
        assert res.settings["precision"]["cudnn_allow_tf32"] is False
        assert res.settings["precision"]["cudnn_benchmark"] is True
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = before


def test_ode_through_an_energy_model_agrees_with_its_energy(field, samples):
    model = GaussianEnergy(field)
    model.C = -model.offset
    ode = _ode(model, samples)  # through D = y − t∇U, a double backward per divergence term
    energy = energy_log_prob(model, samples, levels=None)
    assert ode.settings["model_through"].startswith("energy")
    assert (ode.log_prob - energy.log_prob).abs().max() < 0.05


def test_determinism_under_a_fixed_generator(field):
    u8 = (field.sample(4, torch.Generator().manual_seed(6)) * 255).round().clamp(0, 255).to(torch.uint8)

    def go(seed: int) -> torch.Tensor:
        return ode_log_prob(field.wiener_denoise, u8, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, prior_mean=0.5,
                            dequantization="uniform", rtol=1e-3, atol=1e-3,
                            generator=torch.Generator().manual_seed(seed)).log_prob

    a, b, c = go(0), go(0), go(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_uniform_dequantization_stays_in_the_bins():
    k = torch.arange(256, dtype=torch.uint8).view(4, 1, 8, 8)
    x = prepare_images(k, dequantization="uniform", generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal((x * 256).floor().to(torch.uint8), k)
    assert torch.equal(prepare_images(k.float() / 255), k.float() / 255)


@pytest.mark.parametrize("bad, message", [
    (torch.full((1, 1, 2, 2), float("nan")), "NaN"),
    (torch.full((1, 1, 2, 2), 1.5), r"in \[0, 1\]"),
    (torch.full((1, 1, 2, 2), 0.123), "not 8-bit"),
    (torch.zeros(1, 2, 2), "shape"),
])
def test_bad_images_get_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        prepare_images(bad)


def test_bad_settings_get_clear_errors(field, samples):
    with pytest.raises(ValueError, match="dequantization"):
        prepare_images(samples, dequantization="gaussian")
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        _ode(field.wiener_denoise, samples, sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="hutchinson"):
        probability_flow(field.wiener_denoise, torch.zeros(1, 1, 80, 80), 0.1, 1.0, divergence="exact")
    with pytest.raises(TypeError, match="ODE estimator"):
        energy_log_prob(field.wiener_denoise, samples, levels=None)
    with pytest.raises(ValueError, match="float32"):
        energy_log_prob(_HalfModel(), samples, levels=None)


class _HalfModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1, dtype=torch.bfloat16))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).sum(1)


def test_progress_callback_sees_every_batch(field, samples):
    seen = []
    _ode(field.wiener_denoise, samples[:3], batch_size=2, callback=seen.append, rtol=1e-3, atol=1e-3)
    assert [s.images_done for s in seen] == [2, 3] and all(s.nfe > 0 for s in seen)
    assert all(s.images_total == 3 and s.estimator == "ode" for s in seen)


def test_energy_estimator_refuses_images_of_another_shape_than_the_calibration():
    """C holds for one dimension d: a network that takes 12x12 images must not give them a 'normalized' log p."""
    from priorlab.zoo import create_model

    net = create_model("test_energy_unet", in_chans=1).eval()
    net.calibrate(torch.rand(4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    images = torch.randint(0, 256, (3, 1, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="calibrated for 1x8x8 images"):
        energy_log_prob(net, images)
    assert energy_log_prob(net, images[:, :, :8, :8]).num_images == 3
