"""Measurement operators (orthonormal rows) and Algorithm 2 (linear inverse problems)."""

from __future__ import annotations

import pytest
import torch

from priorlab.core.gaussian_field import GaussianField
from priorlab.solvers import (
    BlockAverage,
    FourierSubset,
    GaussianDeblur,
    MatrixOperator,
    bayer_demosaic,
    box_inpainting,
    compressive_sensing,
    random_mosaic,
    random_pixels,
    solve_linear,
    spectral_lowpass,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _operators(shape):
    c, h, w = shape
    ops = {
        "box": box_inpainting(shape),
        "box-corner": box_inpainting(shape, (0, 0, 2, 3)),
        "pixels": random_pixels(shape, 0.3, generator=_gen()),
        "pixels-per-channel": random_pixels(shape, 0.5, generator=_gen(), per_channel=True),
        "lowpass-square": spectral_lowpass(shape, 0.2),
        "lowpass-disk": spectral_lowpass(shape, 0.35, shape="disk"),
        "gaussian-deblur": GaussianDeblur(shape, 0.8, 0.2),
        "cs-dense": compressive_sensing(shape, 0.25, generator=_gen()),
        "cs-fast": compressive_sensing(shape, 0.25, generator=_gen(), dense_max=0),
        "matrix": MatrixOperator(torch.linalg.qr(torch.randn(c * h * w, 7, generator=_gen(),
                                                             dtype=torch.float64)).Q.T, shape),
    }
    if h % 2 == 0 and w % 2 == 0:
        ops["sr2"] = BlockAverage(shape, 2)
    if h % 3 == 0 and w % 3 == 0:
        ops["sr3"] = BlockAverage(shape, 3)
    if c == 3:
        ops["bayer"] = bayer_demosaic(shape)
        ops["cones"] = random_mosaic(shape, generator=_gen())
    return ops


SHAPES = [(1, 8, 8), (1, 7, 9), (3, 6, 6), (3, 5, 7), (1, 12, 6)]
CASES = [(shape, name) for shape in SHAPES for name in _operators(shape)]


@pytest.mark.parametrize(("shape", "name"), CASES, ids=[f"{n}-{'x'.join(map(str, s))}" for s, n in CASES])
def test_operator_adjoint_and_projection(shape, name):
    op = _operators(shape)[name]
    g = _gen(1)
    x = torch.randn(3, *shape, generator=g, dtype=torch.float64)
    x2 = torch.randn(3, *shape, generator=g, dtype=torch.float64)
    c = torch.randn(3, *op.measurement_shape, generator=g, dtype=torch.float64)
    assert 0 < op.num_measurements <= x[0].numel()
    # ⟨measure(x), c⟩ = ⟨x, embed(c)⟩
    torch.testing.assert_close((op.measure(x) * c).sum(), (x * op.embed(c)).sum(), atol=1e-10, rtol=1e-10)
    # measure ∘ embed = identity (orthonormal rows)
    torch.testing.assert_close(op.measure(op.embed(c)), c, atol=1e-6, rtol=0)
    # embed ∘ measure: idempotent and symmetric projection
    p = op.project(x)
    torch.testing.assert_close(op.project(p), p, atol=1e-6, rtol=0)
    torch.testing.assert_close((op.project(x) * x2).sum(), (x * op.project(x2)).sum(), atol=1e-6, rtol=1e-6)
    # float32 works too and batch sizes are free
    assert op.measure(x[:1].float()).dtype == torch.float32
    # the names of the math: Mᵀ measures, M embeds
    assert torch.equal(op.MT(x), op.measure(x)) and torch.equal(op.M(c), op.embed(c))


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 7, 6)])
def test_fourier_operators_expose_their_orthonormal_basis(shape):
    # The public basis (used to give deepinv's DDRM an exact SVD) is orthogonal and contains the measurement.
    g = _gen(2)
    x = torch.randn(2, *shape, generator=g, dtype=torch.float64)
    for op in (spectral_lowpass(shape, 0.3), compressive_sensing(shape, 0.25, generator=_gen(), dense_max=0)):
        coef = op.coefficients(x)
        assert coef.shape == (2, shape[0], shape[1] * shape[2]) and op.kept.shape == coef.shape[1:]
        torch.testing.assert_close(coef.pow(2).sum(), x.pow(2).sum())  # Parseval
        torch.testing.assert_close(op.image(coef), x)
        torch.testing.assert_close(coef.flatten(1)[:, op.kept.flatten()], op.measure(x))
        assert int(op.kept.sum()) == op.num_measurements


def test_operator_sizes_and_errors():
    with pytest.raises(ValueError, match="must divide"):
        BlockAverage((1, 10, 10), 3)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        random_pixels((1, 8, 8), 1.0)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        spectral_lowpass((1, 8, 8), 0.0)
    with pytest.raises(ValueError, match="C = 3"):
        bayer_demosaic((1, 8, 8))
    with pytest.raises(ValueError, match="inside"):
        box_inpainting((1, 8, 8), (6, 6, 4, 4))
    with pytest.raises(ValueError, match="not orthonormal"):
        MatrixOperator(torch.randn(4, 64), (1, 8, 8))
    with pytest.raises(ValueError, match=r"\(k, 64\)"):
        MatrixOperator(torch.eye(4, 63), (1, 8, 8))
    op = box_inpainting((1, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        op.measure(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="measurement must have shape"):
        op.embed(torch.zeros(1, 5))
    sr = BlockAverage((3, 8, 6), 2)
    assert sr.measurement_shape == (3, 4, 3)
    x = torch.rand(1, 3, 8, 6)
    torch.testing.assert_close(sr.measure(x) / 2, torch.nn.functional.avg_pool2d(x, 2))  # kernel 1/s
    assert bayer_demosaic((3, 4, 4)).mask.sum(0).eq(1).all()  # one colour per pixel
    assert spectral_lowpass((1, 16, 16), 0.2).num_measurements == round(0.2 * 256)
    with pytest.raises(ValueError, match="three non-negative"):
        random_mosaic((3, 4, 4), (float("nan"), 1.0, 1.0))
    keep = torch.ones(1, 16, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"\+1 and -1"):
        FourierSubset((1, 4, 4), keep, signs=torch.full((1, 4, 4), 2.0))
    with pytest.raises(ValueError, match=r"signs must be a \(1, 4, 4\)"):
        FourierSubset((1, 4, 4), keep, signs=torch.ones(3, 4, 4))


@pytest.mark.parametrize(("size", "fraction"), [((16, 16), 0.1), ((64, 64), 0.1), ((9, 7), 0.3), ((16, 16), 0.2)])
@pytest.mark.parametrize("shape", ["square", "disk"])
def test_lowpass_keeps_whole_frequencies(size, fraction, shape):
    # A band that depends on |f| only commutes with circular shifts; half of a conjugate pair would not
    # (round(0.1 * 256) = 26 cuts a pair at 16x16, so 27 coefficients are kept there).
    op = spectral_lowpass((1, *size), fraction, shape=shape)
    assert op.num_measurements - round(fraction * size[0] * size[1]) in (0, 1)
    x = torch.randn(2, 1, *size, generator=_gen(3), dtype=torch.float64)
    for shift in ((1, 0), (0, 2), (3, 1)):
        torch.testing.assert_close(op.project(x.roll(shift, dims=(2, 3))), op.project(x).roll(shift, dims=(2, 3)))


FIELD = GaussianField(8, alpha=2.0, variance=0.05, mean=0.5)


def _posterior_mean(op, x):
    """Exact E[x_missing | x_observed] for the Gaussian field (dense covariance)."""
    cov = FIELD.covariance()
    obs = op.mask.flatten()
    mis = ~obs
    xf = x.flatten(1).double() - FIELD.mean
    gain = torch.linalg.solve(cov[obs][:, obs], cov[obs][:, mis]).T
    return FIELD.mean + xf[:, obs] @ gain.T, mis


def test_inpainting_mean_approaches_exact_posterior_mean():
    x = FIELD.sample(2, _gen(1), dtype=torch.float64)
    op = box_inpainting((1, 8, 8))
    res = solve_linear(FIELD.wiener_denoise, op, op.measure(x), num_samples=64, beta=0.1, sigma_final=0.005,
                       generator=_gen(2))
    exact, mis = _posterior_mean(op, x)
    mean = res.mean.flatten(1)[:, mis]
    prior_err = (x.flatten(1)[:, mis] - FIELD.mean).abs().mean()
    post_std = res.std.flatten(1)[:, mis].mean()
    err = (mean - exact).abs().mean()
    # Monte-Carlo error of a 64-sample mean ≈ post_std/8; far below the error of the prior mean.
    assert err < 0.35 * post_std and err < 0.3 * prior_err, (err, post_std, prior_err)
    assert res.samples.shape == (2, 64, 1, 8, 8) and res.converged.all()


@pytest.mark.parametrize("reproject", [True, False])
def test_solution_satisfies_measurements(reproject):
    x = FIELD.sample(2, _gen(3))
    op = random_pixels((1, 8, 8), 0.3, generator=_gen(4))
    c = op.measure(x)
    res = solve_linear(FIELD.wiener_denoise, op, c, num_samples=2, reproject=reproject, generator=_gen(5))
    got = op.measure(res.samples.flatten(0, 1)).view(2, 2, -1)
    dev = (got - c[:, None]).abs().max()
    if reproject:
        assert dev < 1e-5  # exact: (I − P)x̂ + Mc
    else:
        # the unconstrained final denoise drifts from c by about σ_final
        assert dev < 0.1 and res.measurement_error.max() < 0.05
    assert res.measurement_error.shape == (2, 2)


def test_solver_determinism_and_seed_dependence():
    x = FIELD.sample(1, _gen(6))
    op = BlockAverage((1, 8, 8), 2)
    c = op.measure(x)

    def run(seed):
        return solve_linear(FIELD.wiener_denoise, op, c, num_samples=2, generator=_gen(seed))

    a, b, d = run(0), run(0), run(1)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.steps, b.steps)
    assert not torch.allclose(a.samples, d.samples)
    assert (a.std > 0).any() and a.std.shape == (1, 1, 8, 8)


def test_color_solver_and_validation():
    field = GaussianField(6, alpha=2.0, variance=0.05, mean=0.5, channels=3)
    op = bayer_demosaic((3, 6, 6))
    x = field.sample(1, _gen(7))
    res = solve_linear(field.wiener_denoise, op, op.measure(x), generator=_gen(8))
    assert res.images.shape == (1, 3, 6, 6) and res.std.abs().max() == 0
    with pytest.raises(ValueError, match="measurement must have shape"):
        solve_linear(field.wiener_denoise, op, torch.zeros(1, 5))
    with pytest.raises(ValueError, match="num_samples"):
        solve_linear(field.wiener_denoise, op, op.measure(x), num_samples=0)


@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 9, 14)])
def test_gaussian_deblur_reads_the_measurement_off_the_blurred_image(shape):
    """Mᵀx is recovered exactly from the blurred image; the kept set is where the blur's transfer
    function is at least the threshold, so a wider blur keeps fewer coefficients."""
    x = torch.rand(2, *shape, generator=_gen(), dtype=torch.float64)
    op = GaussianDeblur(shape, 1.0, 0.1)
    b = op.blur(x)
    assert (b - x).abs().max() > 1e-2  # it blurs
    assert torch.allclose(b.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)))  # and keeps the DC
    assert torch.allclose(op.measurement_from_blurred(b), op.measure(x), atol=1e-10)
    wider = GaussianDeblur(shape, 2.0, 0.1)
    assert 0 < wider.num_measurements < op.num_measurements < x[0].numel()
    # a blur of std s keeps |f| <= sqrt(ln(1/threshold) / 2) / (pi s): at s = 1, threshold 0.1, |f| <= 0.3416
    fy, fx = torch.fft.fftfreq(shape[1]), torch.fft.fftfreq(shape[2])
    inside = ((fy[:, None] ** 2 + fx[None, :] ** 2).sqrt() <= 0.3416).sum() * shape[0]
    assert op.num_measurements == int(inside)
    with pytest.raises(ValueError, match="blur_sigma"):
        GaussianDeblur(shape, 0.0)
    with pytest.raises(ValueError, match="threshold"):
        GaussianDeblur(shape, 1.0, 1.5)
