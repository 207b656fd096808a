import math

import pytest
import torch

from priorlab.analysis import (
    JacobianOperator,
    adaptive_basis,
    adaptive_filters,
    analyze_jacobian,
    check_exact_size,
    effective_dimensionality,
    effective_radius,
    eval_mode,
    hutchinson,
    leading_eigenpairs,
    psnr_vs_sigma,
)
from priorlab.core.gaussian_field import GaussianField
from priorlab.zoo import create_model


def _net(bias: bool = False, seed: int = 0) -> torch.nn.Module:
    """Tiny DnCNN in eval mode, after a train-mode forward that sets its running statistics."""
    torch.manual_seed(seed)
    net = create_model("test_bf_dncnn", bias=bias)
    if bias:
        with torch.no_grad():
            for m in net.modules():
                if getattr(m, "bias", None) is not None and isinstance(m.bias, torch.Tensor):
                    m.bias.normal_(0, 0.1)
    net.train()
    with torch.no_grad():
        net(torch.rand(8, 1, 12, 12))
    return net.eval()


def _y(size=(6, 6), seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, *size, generator=g) + 0.1 * torch.randn(1, *size, generator=g)


class Linear:
    """x̂(y) = M·y: a linear denoiser with a known Jacobian."""

    def __init__(self, m: torch.Tensor, shape) -> None:
        self.m, self.shape = m, shape

    def __call__(self, y, sigma=None):
        return (y.flatten(1) @ self.m.T).reshape(y.shape)


def test_exact_and_matrix_free_jacobians_agree():
    net, y = _net(), _y()
    op = JacobianOperator(net, y, chunk=7)
    a = op.matrix()
    assert a.shape == (36, 36)
    eye = torch.eye(36)
    torch.testing.assert_close(op.jvp(eye).T, a, atol=1e-5, rtol=1e-4)  # columns from JVPs
    exact = analyze_jacobian(net, y, mode="exact", num_eigen=4)
    free = analyze_jacobian(net, y, mode="matrix-free", num_eigen=1, probes=128, iters=2,
                            generator=torch.Generator().manual_seed(0))
    assert exact.exact and not free.exact
    assert abs(free.trace - exact.trace) < 5 * free.trace_stderr + 1e-4
    assert abs(free.frobenius_sq - exact.frobenius_sq) < 5 * free.frobenius_sq_stderr + 1e-4
    assert free.eigenvalues[0] <= exact.eigenvalues[0] + 1e-4  # a Ritz value never exceeds the top one
    assert abs(free.asymmetry - exact.asymmetry) < 0.3 * exact.asymmetry + 1e-3
    torch.testing.assert_close(exact.singular_values.pow(2).sum().item(), exact.frobenius_sq, rtol=1e-4, atol=1e-4)


def test_linear_denoiser_jacobian_is_its_matrix():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(16, 16, generator=g)
    lin = Linear(m, (1, 4, 4))
    y = torch.randn(1, 4, 4, generator=g)
    res = analyze_jacobian(lin, y, mode="exact", keep_matrix=True)
    torch.testing.assert_close(res.matrix, m, atol=1e-5, rtol=1e-5)
    assert res.net_bias_norm < 1e-4 * res.denoised_norm
    expected = (torch.linalg.matrix_norm(m - m.T) / torch.linalg.matrix_norm(m)).item()
    assert res.asymmetry == pytest.approx(expected, rel=1e-5)
    assert res.trace == pytest.approx(m.trace().item(), abs=1e-4)


def test_hutchinson_is_unbiased():
    g = torch.Generator().manual_seed(3)
    m = torch.randn(25, 25, generator=g)
    op = JacobianOperator(Linear(m, (1, 5, 5)), torch.randn(1, 5, 5, generator=g))
    est = hutchinson(op, probes=4000, generator=g)
    tr, tr_se = est["trace"]
    fro, fro_se = est["frobenius_sq"]
    assert abs(tr - m.trace().item()) < 4 * tr_se
    assert abs(fro - m.pow(2).sum().item()) < 4 * fro_se
    with pytest.raises(ValueError, match="at least 2"):
        hutchinson(op, probes=1)


def test_wiener_denoiser_trace_is_analytic():
    field = GaussianField(8, alpha=2.0, variance=0.01)
    sigma = 0.05
    lam = field.spectrum()
    expected = (lam / (lam + sigma**2)).sum().item()  # tr of the Wiener filter, Σ_k S_k/(S_k + σ²)
    g = torch.Generator().manual_seed(0)
    y = field.sample(1, g)[0] + sigma * torch.randn(1, 8, 8, generator=g)
    exact = analyze_jacobian(field.wiener_denoise, y, sigma, mode="exact")
    assert exact.trace == pytest.approx(expected, rel=1e-4)
    assert exact.asymmetry < 1e-5  # the MMSE Jacobian is symmetric
    assert exact.frobenius_sq == pytest.approx((lam / (lam + sigma**2)).pow(2).sum().item(), rel=1e-4)
    free = analyze_jacobian(field.wiener_denoise, y, sigma, mode="matrix-free", probes=128, num_eigen=3,
                            iters=30, generator=g)
    assert abs(free.trace - expected) < 4 * free.trace_stderr
    # the DC term shares its λ with the four lowest frequencies, so only the top Ritz value is sharp here
    top = (lam / (lam + sigma**2)).max().float()
    torch.testing.assert_close(free.eigenvalues[0], top, atol=2e-3, rtol=0)
    assert (free.eigenvalues <= top + 2e-3).all()


@pytest.mark.parametrize("bias", [False, True])
def test_net_bias_zero_only_for_bias_free(bias):
    net, y = _net(bias=bias), _y()
    op = JacobianOperator(net, y)
    jy = op.jvp(y.reshape(1, -1))[0]
    gap = (op.denoised.reshape(-1) - jy).norm() / op.denoised.norm()
    res = analyze_jacobian(net, y, mode="exact")
    if bias:
        assert gap > 1e-2 and res.net_bias_norm > 1e-2 * res.denoised_norm
    else:
        assert gap < 1e-5 and res.net_bias_norm < 1e-5 * res.denoised_norm


def test_eval_mode_warns_switches_and_restores():
    net = _net().train()
    y = _y()
    with pytest.warns(UserWarning, match="training mode"):
        res = analyze_jacobian(net, y, mode="exact")
    assert net.training and all(m.training for m in net.modules())
    assert res.net_bias_norm < 1e-5 * res.denoised_norm  # computed in eval mode
    with pytest.warns(UserWarning), eval_mode(net):
        assert not any(m.training for m in net.modules())


def test_exact_jacobian_too_large_is_a_clear_error():
    with pytest.raises(ValueError, match=r"N² × 4 bytes = 1,024 MiB.*matrix-free"):
        check_exact_size(128 * 128)
    with pytest.raises(ValueError, match="matrix-free"):
        analyze_jacobian(_net(), _y(), mode="exact", max_bytes=1000)
    assert not analyze_jacobian(_net(), _y(), mode="auto", max_bytes=1000, probes=4, num_eigen=2, iters=2).exact


def test_filters_are_rows_of_the_jacobian():
    net, x = _net(), _y((7, 9)).clamp(0, 1)
    pixels = [(0, 0), (3, 4), (6, 8)]
    res = adaptive_filters(net, x, pixels, [0.1, 0.3], generator=torch.Generator().manual_seed(0))
    assert res.filters.shape == (2, 3, 1, 7, 9) and res.radii.shape == (2, 3)
    for s in range(2):
        a = JacobianOperator(net, res.noisy[s]).matrix()
        for k, (r, c) in enumerate(pixels):
            torch.testing.assert_close(res.filters[s, k].reshape(-1), a[r * 9 + c], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(res.sums, res.filters.sum((-3, -2, -1)))
    with pytest.raises(ValueError, match="inside"):
        adaptive_filters(net, x, [(7, 0)], [0.1])


def test_effective_radius():
    delta = torch.zeros(1, 1, 9, 9)
    delta[0, 0, 4, 4] = 1
    assert effective_radius(delta, torch.tensor([[4, 4]])).item() == 0
    ring = torch.zeros(1, 1, 9, 9)
    ring[0, 0, 4, 6] = ring[0, 0, 4, 2] = 1
    assert effective_radius(ring, torch.tensor([[4, 4]])).item() == pytest.approx(2.0)


def test_adaptive_basis_exact_and_matrix_free():
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(25, 25, generator=g))[0]
    spectrum = torch.linspace(1.0, 0.0, 25) ** 2
    skew = 0.01 * torch.randn(25, 25, generator=g)
    lin = Linear(q @ torch.diag(spectrum) @ q.T + skew - skew.T, (1, 5, 5))  # symmetric part known
    y = torch.randn(1, 5, 5, generator=g)
    exact = adaptive_basis(lin, y, k=3, mode="exact")
    free = adaptive_basis(lin, y, k=3, mode="matrix-free", iters=60, generator=g)
    assert exact.exact and not free.exact and exact.eigenvectors.shape == (3, 1, 5, 5)
    torch.testing.assert_close(exact.eigenvalues, spectrum[:3], atol=1e-5, rtol=0)
    torch.testing.assert_close(free.eigenvalues, spectrum[:3], atol=1e-4, rtol=0)
    overlap = (free.eigenvectors.reshape(3, -1) * exact.eigenvectors.reshape(3, -1)).sum(1).abs()
    torch.testing.assert_close(overlap, torch.ones(3), atol=1e-3, rtol=0)
    net = _net()
    basis = adaptive_basis(net, _y(), k=2, mode="exact")
    v = basis.eigenvectors.reshape(2, -1)
    torch.testing.assert_close(v @ v.T, torch.eye(2), atol=1e-5, rtol=0)
    op = JacobianOperator(lin, y)
    vals, vecs = leading_eigenpairs(op, 2, iters=60, generator=g)
    torch.testing.assert_close(op.sym(vecs), vals[:, None] * vecs, atol=3e-3, rtol=0)


def test_effective_dimensionality_definitions():
    field = GaussianField(6, alpha=2.0, variance=0.01)
    lam = field.spectrum()
    sigmas = [0.05, 0.2]
    patches = field.sample(3, torch.Generator().manual_seed(0))
    res = effective_dimensionality(field.wiener_denoise, patches, sigmas, generator=torch.Generator().manual_seed(1))
    for s, sigma in enumerate(sigmas):
        expected = (lam / (lam + sigma**2)).sum().item()
        torch.testing.assert_close(res.trace[s], torch.full((3,), expected), rtol=1e-4, atol=1e-4)
    assert (res.trace[0] > res.trace[1]).all()  # falls with σ
    est = effective_dimensionality(field.wiener_denoise, patches, sigmas, exact=False, probes=64,
                                   generator=torch.Generator().manual_seed(1))
    assert not est.exact and est.probes == 64
    torch.testing.assert_close(est.trace, res.trace, rtol=0.1, atol=0.5)
    # E‖x − x̂‖²/σ² = tr A for the MMSE denoiser (ICLR 2024 eq. 10): check in the mean over many draws.
    many = field.sample(100, torch.Generator().manual_seed(2))
    mse = effective_dimensionality(field.wiener_denoise, many, [0.1], exact=False, probes=2,
                                   generator=torch.Generator().manual_seed(3)).mse
    expected = (lam / (lam + 0.01)).sum().item()
    assert abs(mse.mean().item() - expected) < 4 * mse.std().item() / math.sqrt(100)


def test_psnr_vs_sigma_same_noise_and_deterministic():
    net = _net()
    imgs = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ident = lambda y, sigma=None: y  # noqa: E731
    calls = []
    run = lambda: psnr_vs_sigma({"bf": net, "id": ident}, imgs, [0.05, 0.2],  # noqa: E731
                                generator=torch.Generator().manual_seed(5), callback=lambda d, t: calls.append(d))
    a, b = run(), run()
    assert a.psnr.shape == (2, 2, 2) and a.names == ("bf", "id")
    torch.testing.assert_close(a.psnr, b.psnr, rtol=0, atol=0)
    torch.testing.assert_close(a.psnr[1], a.psnr_in)  # the identity returns the (clipped) noisy input
    assert (a.psnr_in[0] > a.psnr_in[1]).all() and calls[-1] == 4
