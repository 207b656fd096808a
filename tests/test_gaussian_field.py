"""Exactness of the stationary Gaussian field: spectrum, sampling, densities, Wiener denoiser."""

from __future__ import annotations

import math

import pytest
import torch

from priorlab.core.gaussian_field import GaussianField, power_law_spectrum

SIZES = [(4, 4), (6, 5), (5, 7)]


def dense_covariance(spectrum: torch.Tensor) -> torch.Tensor:
    """Σ = Re(Fᴴ diag(λ) F) with F the unitary 2-D DFT written out as a Kronecker product of DFT
    matrices (independent of torch.fft); row-major pixel order."""
    height, width = spectrum.shape

    def dft(n: int) -> torch.Tensor:
        k = torch.arange(n, dtype=torch.float64)
        return torch.exp(-2j * math.pi * torch.outer(k, k) / n) / math.sqrt(n)

    f2 = torch.kron(dft(height), dft(width))
    cov = f2.conj().T @ torch.diag(spectrum.flatten().to(torch.complex128)) @ f2
    assert cov.imag.abs().max() < 1e-12  # symmetric spectrum ⇒ real covariance
    return cov.real


def reference_normal(field: GaussianField, extra_variance: float = 0.0,
                     ) -> torch.distributions.MultivariateNormal:
    """The field (plus white noise) as an explicit N-dimensional normal, channels block-diagonal."""
    cov = dense_covariance(field.spectrum())
    cov = torch.block_diag(*[cov] * field.channels) + extra_variance * torch.eye(field.num_pixels,
                                                                                 dtype=torch.float64)
    loc = torch.full((field.num_pixels,), field.mean, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(loc, covariance_matrix=cov)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("alpha", [0.0, 1.3, 2.0])
def test_spectrum_properties(size, alpha):
    height, width = size
    lam = power_law_spectrum(height, width, alpha, variance=0.02)
    assert lam.shape == size and lam.dtype == torch.float64 and (lam > 0).all()
    flipped = torch.roll(lam.flip(0, 1), shifts=(1, 1), dims=(0, 1))  # λ[(-i) mod H, (-j) mod W]
    torch.testing.assert_close(lam, flipped)
    torch.testing.assert_close(lam.mean(), torch.tensor(0.02, dtype=torch.float64))
    # DC = value at the smallest nonzero frequency, which is the largest nonzero eigenvalue.
    nonzero = lam.flatten()[1:]
    torch.testing.assert_close(lam[0, 0], nonzero.max())
    field = GaussianField(size, alpha=alpha, variance=0.02)
    cov = field.covariance()
    torch.testing.assert_close(cov, dense_covariance(lam))
    torch.testing.assert_close(cov.diagonal(), torch.full((height * width,), 0.02, dtype=torch.float64))
    if alpha == 0.0:
        torch.testing.assert_close(cov, 0.02 * torch.eye(height * width, dtype=torch.float64))


def test_spectrum_decays_with_frequency():
    lam = power_law_spectrum(16, 16, 2.0, 1.0)
    # Along an axis, λ ∝ 1/k² for k = 1..8: ratio λ(1)/λ(k) = k².
    for k in range(1, 9):
        assert lam[0, 1] / lam[0, k] == pytest.approx(k**2)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 2])
def test_log_prob_matches_dense_normal(size, channels):
    field = GaussianField(size, alpha=1.7, variance=0.03, channels=channels, mean=0.4)
    reference = reference_normal(field)
    gen = torch.Generator().manual_seed(0)
    x = field.sample(5, gen, dtype=torch.float64)
    # also points far from the samples (the density must be right everywhere)
    x = torch.cat([x, torch.rand(3, channels, *size, generator=gen, dtype=torch.float64)])
    expected = reference.log_prob(x.flatten(1))
    torch.testing.assert_close(field.log_prob(x), expected, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(field.log_prob_noisy(x, 0.0), expected, rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize("size", SIZES)
def test_log_prob_noisy_matches_dense_normal(size):
    field = GaussianField(size, alpha=2.0, variance=0.01, channels=2, mean=0.5)
    gen = torch.Generator().manual_seed(1)
    y = field.sample(4, gen, dtype=torch.float64) + 0.1 * torch.randn(4, 2, *size, generator=gen,
                                                                       dtype=torch.float64)
    sigmas = torch.tensor([0.05, 0.1, 0.2, 0.5], dtype=torch.float64)
    got = field.log_prob_noisy(y, sigmas)
    for i, s in enumerate(sigmas.tolist()):
        expected = reference_normal(field, extra_variance=s**2).log_prob(y[i].flatten())
        torch.testing.assert_close(got[i], expected, rtol=1e-10, atol=1e-8)
    # a float sigma is the same as a constant vector; energy is minus the noisy log-density at t = σ²
    torch.testing.assert_close(field.log_prob_noisy(y, 0.1), field.log_prob_noisy(y, torch.full((4,), 0.1)))
    torch.testing.assert_close(field.energy(y, sigmas**2), -got)


def test_float32_log_prob_close_to_float64():
    field = GaussianField(8, alpha=2.0, variance=0.01, mean=0.5)
    x = field.sample(3, torch.Generator().manual_seed(2), dtype=torch.float64)
    lp32 = field.log_prob(x.float())
    assert lp32.dtype == torch.float32
    torch.testing.assert_close(lp32.double(), field.log_prob(x), rtol=1e-5, atol=1e-3)


def test_sample_shape_determinism_and_power_spectrum():
    field = GaussianField((8, 6), alpha=2.0, variance=0.01, channels=2, mean=0.5)
    x = field.sample(3, torch.Generator().manual_seed(3))
    assert x.shape == (3, 2, 8, 6) and x.dtype == torch.float32
    torch.testing.assert_close(x, field.sample(3, torch.Generator().manual_seed(3)), rtol=0, atol=0)
    assert not torch.equal(x, field.sample(3, torch.Generator().manual_seed(4)))

    n = 4000
    x = field.sample(n, torch.Generator().manual_seed(5), dtype=torch.float64)
    power = torch.fft.fft2(x - field.mean, norm="ortho").abs().pow(2).mean(dim=(0, 1))  # E|X_k|² = λ_k
    rel = (power / field.spectrum() - 1).abs()
    # |X_k|²/λ_k averages 2n draws of Exp(1) (χ²₁ at the self-conjugate k): relative std ≤ √(1/n)
    assert rel.max() < 6 * math.sqrt(1.0 / n), rel.max()
    assert x.var().item() == pytest.approx(field.variance, rel=0.05)
    assert x.mean().item() == pytest.approx(field.mean, abs=0.01)
    # empirical covariance of one channel against the dense covariance
    flat = (x[:, 0] - field.mean).flatten(1)
    emp_cov = flat.T @ flat / n
    assert (emp_cov - field.covariance()).abs().max() < 8 * field.variance / math.sqrt(n)


def test_wiener_mse_matches_mmse_and_beats_alternatives():
    field = GaussianField(16, alpha=2.0, variance=0.01, mean=0.5)
    gen = torch.Generator().manual_seed(6)
    n, sigma = 2000, 0.1
    x = field.sample(n, gen, dtype=torch.float64)
    y = x + sigma * torch.randn(x.shape, generator=gen, dtype=torch.float64)

    def per_image_mse(x_hat):
        return (x_hat - x).pow(2).flatten(1).mean(1)

    mse = per_image_mse(field.wiener_denoise(y, sigma))
    stderr = mse.std() / math.sqrt(n)
    assert abs(mse.mean().item() - field.mmse(sigma)) < 5 * stderr.item()
    assert field.mmse(sigma) < sigma**2  # denoising helps
    for wrong in (GaussianField(16, alpha=1.0, variance=0.01, mean=0.5),
                  GaussianField(16, alpha=3.0, variance=0.01, mean=0.5),
                  GaussianField(16, alpha=2.0, variance=0.03, mean=0.5)):
        worse = per_image_mse(wrong.wiener_denoise(y, sigma))
        gap = worse - mse  # paired: same noise, so the gap is measured precisely
        assert gap.mean() > 5 * gap.std() / math.sqrt(n)
    # identity and the constant mean are far worse
    assert per_image_mse(y).mean() > 1.5 * mse.mean()
    assert per_image_mse(torch.full_like(y, field.mean)).mean() > 1.5 * mse.mean()


def test_wiener_per_image_sigma_and_limits():
    field = GaussianField((6, 5), alpha=2.0, variance=0.01, channels=3, mean=0.5)
    gen = torch.Generator().manual_seed(7)
    y = field.sample(3, gen) + 0.1 * torch.randn(3, 3, 6, 5, generator=gen)
    sigmas = torch.tensor([0.05, 0.1, 0.3])
    batched = field.wiener_denoise(y, sigmas)
    assert batched.shape == y.shape and batched.dtype == y.dtype
    for i in range(3):
        torch.testing.assert_close(batched[i:i + 1], field.wiener_denoise(y[i:i + 1], float(sigmas[i])))
    torch.testing.assert_close(field.wiener_denoise(y, 0.0), y)  # no noise: identity
    far = field.wiener_denoise(y, 1e4)  # overwhelming noise: the prior mean
    torch.testing.assert_close(far, torch.full_like(y, field.mean), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="sigma"):
        field.wiener_denoise(y)
    with pytest.raises(ValueError, match="shape"):
        field.wiener_denoise(y[:, :1], 0.1)


def test_mmse_limits_and_monotonic():
    field = GaussianField(8, alpha=2.0, variance=0.01)
    sigmas = torch.tensor([1e-4, 0.01, 0.05, 0.1, 0.5, 100.0])
    mmse = field.mmse(sigmas)
    assert mmse.shape == sigmas.shape and (mmse.diff() > 0).all()
    assert mmse[0] < 1.01e-8  # ≤ σ²
    assert mmse[-1] == pytest.approx(field.variance, rel=1e-5)
    assert isinstance(field.mmse(0.1), float) and field.mmse(0.1) == pytest.approx(mmse[3].item())


@pytest.mark.parametrize("size", [(6, 5), (8, 8)])
def test_tweedie_wiener_equals_score_of_noisy_density(size):
    """x̂(y) = y + σ² ∇_y log p_σ(y) (Miyasawa/Tweedie), gradient by autograd."""
    field = GaussianField(size, alpha=2.0, variance=0.01, channels=2, mean=0.5)
    gen = torch.Generator().manual_seed(8)
    sigmas = torch.tensor([0.02, 0.1, 0.4], dtype=torch.float64)
    y = field.sample(3, gen, dtype=torch.float64) + sigmas.view(-1, 1, 1, 1) * torch.randn(
        3, 2, *size, generator=gen, dtype=torch.float64)
    y.requires_grad_(True)
    (grad,) = torch.autograd.grad(field.log_prob_noisy(y, sigmas).sum(), y)
    tweedie = y.detach() + sigmas.view(-1, 1, 1, 1) ** 2 * grad
    torch.testing.assert_close(tweedie, field.wiener_denoise(y.detach(), sigmas), rtol=1e-10, atol=1e-12)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        GaussianField(8, alpha=-1.0)
    with pytest.raises(ValueError):
        GaussianField(8, variance=0.0)
    with pytest.raises(ValueError):
        GaussianField(8, channels=0)
    field = GaussianField(4)
    with pytest.raises(ValueError, match="shape"):
        field.log_prob(torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match="sigma"):
        field.log_prob_noisy(torch.zeros(2, 1, 4, 4), torch.tensor([0.1, 0.2, 0.3]))
