"""Bad input to the Python API: a clear exception that says what is wrong, never a deep torch error or NaNs."""

from __future__ import annotations

import pytest
import torch

from priorlab import zoo
from priorlab.analysis import adaptive_basis, analyze_jacobian, effective_dimensionality
from priorlab.core import add_noise, sample_sigmas
from priorlab.samplers import energy_denoiser, sample_adaptive
from priorlab.solvers import BlockAverage, MatrixOperator, box_inpainting, random_pixels, solve_linear

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gray():
    return zoo.create_model("test_bf_dncnn", in_chans=1).eval()


@pytest.fixture(scope="module")
def color_unet():
    return zoo.create_model("test_bf_unet", in_chans=3).eval()


@pytest.mark.parametrize("make, error, message", [
    (lambda: torch.rand(1, 16, 16), ValueError, r"\(B, 1, H, W\).*add a batch axis"),  # was a (1,1,16,16) output
    (lambda: torch.rand(1, 3, 16, 16), ValueError, r"\(B, 1, H, W\) images, got shape \(1, 3, 16, 16\)"),
    (lambda: torch.randint(0, 255, (1, 1, 16, 16)), TypeError, "floating-point"),
    # was torch's "expected scalar type Double but found Float"
    (lambda: torch.rand(1, 1, 16, 16).double(), TypeError, "weights are float32 but the images are float64"),
])
def test_networks_check_their_input(gray, color_unet, make, error, message):
    with pytest.raises(error, match=message):
        gray(make())
    meta = zoo.create_model("test_bf_dncnn", in_chans=1).to("meta")  # shape inference on the meta device still works
    assert meta(torch.empty(1, 1, 8, 8, device="meta")).shape == (1, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts float32/16 inputs and weights, not float64
        assert gray(torch.rand(1, 1, 16, 16, dtype=torch.float16)).shape == (1, 1, 16, 16)
        with pytest.raises(TypeError, match="images are float64"):
            gray(torch.rand(1, 1, 16, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        color_unet(torch.rand(3, 16, 16))


def test_sampler_refuses_bad_starts_and_guards(gray):
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\) images, got shape \(1, 3, 8, 8\)"):
        sample_adaptive(gray, (1, 3, 8, 8), max_steps=2)
    with pytest.raises(ValueError, match="NaN"):
        sample_adaptive(gray, x_init=torch.full((1, 1, 8, 8), float("nan")), max_steps=2)
    with pytest.raises(ValueError, match="guard must be > 1"):
        sample_adaptive(gray, (1, 1, 8, 8), guard=0.5, max_steps=2)
    with pytest.raises(ValueError, match="max_steps must be an int"):
        sample_adaptive(gray, (1, 1, 8, 8), max_steps=2.5)


def test_solver_and_operators_refuse_bad_input(gray):
    with pytest.raises(ValueError, match="NaN or infinite"):
        MatrixOperator(torch.full((4, 64), float("nan")), (1, 8, 8))  # its orthonormality check passed NaN
    op = random_pixels((1, 8, 8), 0.5, generator=torch.Generator().manual_seed(0))
    c = op.measure(torch.rand(1, 1, 8, 8))
    with pytest.raises(TypeError, match="LinearOperator"):
        solve_linear(gray, "box", c)
    with pytest.raises(ValueError, match="NaN"):
        solve_linear(gray, op, torch.full_like(c, float("nan")), max_steps=2)


def test_analysis_refuses_impossible_counts_and_noise_levels(gray):
    y = torch.rand(1, 1, 6, 6)
    with pytest.raises(ValueError, match="k and iters must be >= 1"):
        adaptive_basis(gray, y, 0.1, k=-1)  # used to return N - 1 eigenpairs (a Python slice)
    with pytest.raises(ValueError, match="num_eigen and iters must be >= 1"):
        analyze_jacobian(gray, y, 0.1, num_eigen=0)
    with pytest.raises(ValueError, match="sigma must be a finite noise level"):
        analyze_jacobian(gray, y, -0.1)
    with pytest.raises(ValueError, match="NaN"):  # used to return a finite, meaningless trace
        effective_dimensionality(gray, torch.full((2, 1, 6, 6), float("nan")), [0.1])


def test_operator_shapes_are_explained():
    with pytest.raises(ValueError, match=r"image_shape must be \(C, H, W\)"):
        box_inpainting((16, 16))
    with pytest.raises(ValueError, match=r"box must be \(top, left, height, width\)"):
        box_inpainting((1, 16, 16), (1, 2, 3))
    with pytest.raises(ValueError, match="larger than the 16x16 image"):
        BlockAverage((1, 16, 16), 17)


def test_noise_helpers_and_energy_models_refuse_bad_levels_and_types():
    with pytest.raises(ValueError, match="batch must be >= 1"):
        sample_sigmas(0, 0.0, 0.4)
    with pytest.raises(ValueError, match="sigma must be a finite noise level"):
        add_noise(torch.rand(1, 1, 4, 4), -0.1)
    with pytest.raises(TypeError, match="float images"):
        add_noise(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 0.1)
    net = zoo.load("dsm-energy-small-fashion-mnist")
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match="t must be finite and >= 0"):
        net.energy(x, -0.1)
    with pytest.raises(ValueError, match=r"t must be a float or have shape \(2,\)"):
        net.energy(x, torch.ones(2, 1))  # was "mat1 and mat2 shapes cannot be multiplied"
    with pytest.raises(TypeError, match="divide 8-bit data by 255"):
        net.log_prob((x * 255).to(torch.uint8))
    with pytest.raises(TypeError, match=r"images are float64: convert the images with \.to\(torch\.float32\)"):
        net.log_prob(x.double())
    with pytest.raises(TypeError, match="needs an energy model"):
        energy_denoiser(zoo.create_model("test_bf_dncnn", in_chans=1))
