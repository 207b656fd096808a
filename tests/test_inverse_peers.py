"""The deepinv wrappers of benchmarks/deepinv_peers.py: physics built from our operators, DDRM's exact SVD
form, and the denoiser in deepinv's convention. Tiny images; skipped without deepinv (the `bench` extra)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepinv")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import deepinv_peers as peers  # noqa: E402

from priorlab import solvers  # noqa: E402

SHAPE = (1, 12, 12)


def _operators():
    g = torch.Generator().manual_seed(0)
    return {
        "box": solvers.box_inpainting(SHAPE),
        "pixels": solvers.random_pixels(SHAPE, 0.3, generator=g),
        "sr": solvers.BlockAverage(SHAPE, 4),
        "lowpass": solvers.spectral_lowpass(SHAPE, 0.2),
        "cs-dense": solvers.compressive_sensing(SHAPE, 0.25, generator=g),
        "cs-fourier": solvers.compressive_sensing((2, 12, 12), 0.25, generator=g, dense_max=16),
        "color-sr": solvers.BlockAverage((3, 12, 12), 2),
        "bayer": solvers.bayer_demosaic((3, 12, 12)),
        "cones": solvers.random_mosaic((3, 12, 12), generator=g),
    }


OPS = _operators()


@pytest.mark.parametrize("name", sorted(OPS))
def test_linear_physics_is_our_operator(name):
    op = OPS[name]
    physics = peers.linear_physics(op)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, *op.image_shape, generator=g)
    c = torch.randn(2, *op.measurement_shape, generator=g)
    torch.testing.assert_close(physics.A(x), op.measure(x))
    torch.testing.assert_close(physics.A_adjoint(c), op.embed(c))
    # Adjointness against ours: <A x, c> = <x, Mᵀ c>.
    lhs = (physics.A(x) * c).sum()
    rhs = (x * op.embed(c)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(OPS))
def test_decomposable_physics_reproduces_our_operator(name):
    op = OPS[name]
    physics = peers.decomposable_physics(op)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, *op.image_shape, generator=g)
    c = op.measure(x)
    # V is orthogonal, and the mask selects exactly k singular values equal to 1.
    torch.testing.assert_close(physics.V(physics.V_adjoint(x)), x, rtol=0, atol=1e-5)
    torch.testing.assert_close(physics.V_adjoint(physics.V(x)), x, rtol=0, atol=1e-5)
    assert physics.mask.shape == (1, *op.image_shape)
    assert int(physics.mask.sum()) == op.num_measurements
    assert set(physics.mask.unique().tolist()) <= {0.0, 1.0}
    # AᵀA = MMᵀ, and the measurement built from c alone equals A x, with the same values as c.
    torch.testing.assert_close(physics.A_adjoint(physics.A(x)), op.project(x), rtol=0, atol=1e-5)
    y = peers.ddrm_measurement(physics, op, c)
    torch.testing.assert_close(y, physics.A(x), rtol=0, atol=1e-5)
    kept = physics.mask.expand_as(y).bool()
    torch.testing.assert_close(y[kept].view(2, -1).sort(dim=1).values, c.flatten(1).sort(dim=1).values,
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(physics.A_adjoint(y), op.embed(c), rtol=0, atol=1e-5)


def test_block_average_svd_puts_our_measurement_at_the_block_corner():
    op = OPS["sr"]
    physics = peers.decomposable_physics(op)
    x = torch.rand(1, *op.image_shape)
    torch.testing.assert_close(physics.A(x)[..., ::4, ::4], op.measure(x), rtol=0, atol=1e-6)


def test_unsupported_operator_is_reported():
    class Other(solvers.LinearOperator):
        pass

    with pytest.raises(NotImplementedError, match="DDRM is skipped"):
        peers.decomposable_physics(Other(SHAPE, (3,)))


class _Scaled(torch.nn.Module):
    """A σ-aware stand-in denoiser with priorlab's contract: x̂ = y / (1 + σ²), σ as float or [B] tensor."""

    def forward(self, y, sigma=None):
        s = torch.as_tensor(0.0 if sigma is None else sigma, dtype=y.dtype).reshape(-1, 1, 1, 1)
        return y / (1 + s**2)


def test_denoiser_wrapper_is_our_denoiser_in_deepinv_convention():
    from deepinv.models import Denoiser

    net = _Scaled()
    wrapped = peers.PriorlabDenoiser(net)
    assert isinstance(wrapped, Denoiser)
    y = torch.rand(3, 1, 8, 8)
    # deepinv passes sigma as a float or a [B] tensor, in the same [0, 1] units as the images.
    torch.testing.assert_close(wrapped(y, 0.5), net(y, sigma=0.5))
    sig = torch.tensor([0.1, 0.2, 0.3])
    torch.testing.assert_close(wrapped(y, sig), net(y, sigma=sig))
    # Gradients reach the input (DPS differentiates the denoiser).
    yg = y.clone().requires_grad_(True)
    wrapped(yg, 0.1).sum().backward()
    assert yg.grad is not None and torch.isfinite(yg.grad).all()


def test_peers_run_on_a_tiny_image():
    """DiffPIR and DDRM end to end (few steps are their defaults' cost at 12×12), DPS with 5 steps."""
    from deepinv.sampling import DDRM, DPS

    net = _Scaled()
    op = OPS["pixels"]
    x = torch.rand(1, *op.image_shape)
    c = op.measure(x)
    for name in ("DiffPIR", "DDRM"):
        out, seconds = peers.run_peer(name, net, op, c, seed=0)
        assert out.shape == x.shape and torch.isfinite(out).all() and seconds >= 0
    physics = peers.decomposable_physics(op)
    out = DDRM(peers.PriorlabDenoiser(net), sigmas=[1.0, 0.5, 0.0])(peers.ddrm_measurement(physics, op, c), physics)
    assert out.shape == x.shape
    dps = DPS(peers.PriorlabDenoiser(net), num_steps=5, guidance="annealed", rng=torch.Generator().manual_seed(0))
    out = dps(c, peers.linear_physics(op), x_init=tuple(x.shape), seed=0)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_wrapper_with_a_priorlab_network():
    """A real (untrained) priorlab BF-DnCNN: the wrapper returns exactly its output, for any sigma form."""
    from priorlab.zoo.registry import build_from_config

    net = build_from_config({"architecture": "bf_dncnn_small",
                             "init_args": {"in_chans": 1, "depth": 3, "width": 8, "bias": False}}).eval()
    wrapped = peers.PriorlabDenoiser(net)
    y = torch.rand(2, 1, 10, 10)
    with torch.no_grad():
        expected = net(y)
        torch.testing.assert_close(wrapped(y, 0.2), expected)
        torch.testing.assert_close(wrapped(y, torch.tensor([0.2, 0.3])), expected)
