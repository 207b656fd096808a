"""Energy models: the UNet, the shared normalization code path, and the dual score matching losses."""

import math

import pytest
import torch

from priorlab.core import energy as energy_module
from priorlab.core.energy import (
    GaussianEnergy,
    check_quantized,
    full_precision,
    gaussian_entropy,
    log_norm_const_from_energies,
)
from priorlab.core.gaussian_field import GaussianField
from priorlab.core.likelihood import bits_per_dim
from priorlab.core.losses import dsm_loss, tsm_loss
from priorlab.core.protocols import Denoiser, EnergyModel
from priorlab.zoo import create_model, list_models
from priorlab.zoo.energy_unet import EnergyNet, count_parameters

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def field():
    return GaussianField(8, alpha=2.0, variance=0.01, mean=0.5)


def tiny_net(channels=1):
    torch.manual_seed(0)
    return create_model("test_energy_unet", in_chans=channels).double().eval()


# ---- architecture --------------------------------------------------------------------------------
@pytest.mark.parametrize("channels,expected", [(3, 8_649_856), (1, 8_647_552)])
def test_paper_unet_parameter_count_matches_the_reference(channels, expected):
    assert count_parameters(create_model("energy_unet", in_chans=channels)) == expected  # algorithms.md §7.5


def test_registry_has_the_energy_family_and_small_weights_fit_the_package():
    assert {"energy_unet", "energy_unet_small", "test_energy_unet"} <= set(list_models(family="energy"))
    small = create_model("energy_unet_small")
    assert count_parameters(small) * 4 < 10e6  # float32 weights shipped in git
    assert count_parameters(create_model("test_energy_unet")) < 10_000
    assert isinstance(small, EnergyNet) and isinstance(small, EnergyModel) and isinstance(small, Denoiser)


def test_timm_parity_and_every_parameter_gets_a_dual_score_gradient():
    import timm

    ours = create_model("test_energy_unet", in_chans=1)
    theirs = timm.create_model("test_energy_unet", in_chans=1)
    assert type(ours) is type(theirs) and ours.arch_config == theirs.arch_config
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(4, 1, 8, 8)
    t = torch.tensor([1e-3, 1e-2, 1e-1, 10.0])
    y = x + t.sqrt().view(-1, 1, 1, 1) * torch.randn_like(x)
    torch.testing.assert_close(ours(y, t.sqrt()), theirs(y, t.sqrt()))
    _, grad_y, grad_t = ours.scores(y, t, create_graph=True)
    (dsm_loss(y - t.view(-1, 1, 1, 1) * grad_y, x, t) + tsm_loss(grad_t, y, x, t)).mean().backward()
    for name, p in ours.named_parameters():  # no dead parameter (DDP would refuse it)
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_time_embedding_arguments():
    from priorlab.zoo.energy_unet import TimeEmbedding

    t = torch.tensor([0.0, 1e-9, 1.0, 1e3])
    for argument in ("variance", "log_variance"):
        emb = TimeEmbedding(4, 8, argument)(t)
        assert emb.shape == (4, 8) and torch.isfinite(emb).all()  # t = 0 (log_prob) is well defined
    small = TimeEmbedding(4, 8, "variance")(torch.tensor([1e-9, 1e-6]))
    torch.testing.assert_close(small[0], small[1], rtol=0, atol=1e-5)  # noise-blind at small t (§7.5)
    with pytest.raises(ValueError, match="log_variance"):
        TimeEmbedding(4, 8, "log")
    assert count_parameters(create_model("energy_unet", time_embedding="log_variance")) == 8_649_856
    assert count_parameters(create_model("energy_unet", time_offset=True)) == 8_649_856 + 256


def test_clean_images_are_embedded_at_the_smallest_trained_variance():
    """t = 0 (log_prob) must not reach the embedding as a variance outside the trained range.

    With s = ln(t + 1e-12) it did: 7 units of s below ln 1e-9, where the sinusoids take values never seen in
    training; a trained Fashion-MNIST model's bits/dim moved by 0.7 between t = 0 and t = 1e-9.
    """
    from priorlab.zoo.energy_unet import TimeEmbedding

    torch.manual_seed(0)
    for argument in ("variance", "log_variance"):
        emb = TimeEmbedding(4, 8, argument, min_variance=1e-6)
        out = emb(torch.tensor([0.0, 1e-12, 1e-6, 1e-5]))
        torch.testing.assert_close(out[0], out[2], rtol=0, atol=0)
        torch.testing.assert_close(out[1], out[2], rtol=0, atol=0)
    assert (out[3] - out[2]).abs().max() > 1e-3  # above the floor, t still matters
    net = create_model("test_energy_unet", in_chans=1, min_variance=1e-4).double().eval()
    with torch.no_grad():
        net.time_offset.weight.normal_()  # make the energy depend on t visibly
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(net.energy(x, 0.0), net.energy(x, 1e-4), rtol=0, atol=0)
    assert (net.energy(x, 1e-3) - net.energy(x, 1e-4)).abs().min() > 1e-6
    with pytest.raises(ValueError, match="min_variance"):
        TimeEmbedding(4, 8, "log_variance", min_variance=0.0)


def test_time_offset_adds_a_function_of_t_only():
    net = tiny_net()
    assert net.time_offset is not None
    y = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.1, 0.1], dtype=torch.float64)
    before = net.energy(y, t)
    with torch.no_grad():
        net.time_offset.weight.fill_(0.5)
    shift = net.energy(y, t) - before
    assert shift.abs().min() > 1e-3
    torch.testing.assert_close(shift[0], shift[1])  # d·h(t): the same for every image at a given t
    _, grad_y, _ = net.scores(y, t)
    net.time_offset.weight.data.zero_()
    torch.testing.assert_close(net.scores(y, t)[1], grad_y)  # the denoiser does not see it


def test_size_channel_and_sigma_errors():
    net = tiny_net()
    with pytest.raises(ValueError, match="multiple of 4"):
        net.energy(torch.rand(1, 1, 30, 28, dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="channel"):
        net.energy(torch.rand(1, 3, 8, 8, dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="sigma"):
        net(torch.rand(1, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="calibrate"):
        net.log_prob(torch.rand(2, 1, 8, 8, dtype=torch.float64))


# ---- the energy network is a gradient field -------------------------------------------------------
def test_denoiser_jacobian_is_symmetric():
    net = tiny_net()
    y = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.05], dtype=torch.float64)

    def denoiser(v):
        _, grad, _ = net.scores(v, t, create_graph=True)
        return (v - t.view(-1, 1, 1, 1) * grad).flatten()

    jac = torch.autograd.functional.jacobian(denoiser, y).reshape(64, 64)
    assert (jac - torch.eye(64, dtype=torch.float64)).abs().max() > 1e-4  # not trivially the identity
    torch.testing.assert_close(jac, jac.T, rtol=1e-8, atol=1e-10)


def test_scores_match_finite_differences_and_the_denoiser_is_y_minus_t_grad():
    net = tiny_net()
    g = torch.Generator().manual_seed(1)
    y = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=g)
    v = torch.randn(y.shape, dtype=torch.float64, generator=g)
    t = torch.tensor([0.3, 2.0], dtype=torch.float64)
    u, grad_y, grad_t = net.scores(y, t)
    h = 1e-5
    fd_y = (net.energy(y + h * v, t) - net.energy(y - h * v, t)) / (2 * h)
    fd_t = (net.energy(y, t + h) - net.energy(y, t - h)) / (2 * h)
    torch.testing.assert_close((grad_y * v).flatten(1).sum(1), fd_y.detach(), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(grad_t, fd_t.detach(), rtol=1e-6, atol=1e-8)
    with torch.no_grad():  # the Denoiser contract works under no_grad (samplers)
        denoised = net(y, t.sqrt())
    torch.testing.assert_close(denoised, y - t.view(-1, 1, 1, 1) * grad_y)


# ---- the analytic Gaussian energy through the shared code path -----------------------------------
def test_gaussian_energy_is_the_field_energy_and_its_denoiser_is_wiener(field):
    energy = GaussianEnergy(field)
    y = field.sample(4, torch.Generator().manual_seed(0), dtype=torch.float64) + 0.2 * torch.randn(4, 1, 8, 8,
                                                                                                 dtype=torch.float64)
    torch.testing.assert_close(energy.energy(y, 0.04), field.energy(y, 0.04))
    torch.testing.assert_close(energy(y, 0.2), field.wiener_denoise(y, 0.2))


def test_calibrated_gaussian_energy_reproduces_exact_log_density_and_bits_per_dim(field):
    offset = 123.4  # an unnormalized energy: calibration must find C = −offset
    energy = GaussianEnergy(field, offset=offset)
    g = torch.Generator().manual_seed(0)
    cal = energy.calibrate(field.sample(4096, g, dtype=torch.float64), t_max=1e3, generator=g)
    # Errors of C: Monte Carlo (stderr ≈ √(d/2)/√n = 0.09 nats) and the Gaussian limit tr(Σ)/(2 t_max) = 3e-4.
    assert 0.05 < cal.stderr < 0.15
    assert abs(cal.log_norm_const + offset) < 4 * cal.stderr
    x = field.sample(16, torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = field.log_prob(x)
    got = energy.log_prob(x)
    shift = -(cal.log_norm_const + offset)  # one constant for every image
    torch.testing.assert_close(got, exact + shift, rtol=0, atol=1e-9)
    d = field.num_pixels
    bpd_got = bits_per_dim(-got, d, levels=None).mean()
    bpd_exact = bits_per_dim(-exact, d, levels=None).mean()
    assert abs(float(bpd_got - bpd_exact)) < 4 * cal.stderr / (d * math.log(2))
    # With C set exactly, the shared log_prob path is exact.
    energy.log_norm_const.fill_(-offset)
    torch.testing.assert_close(energy.log_prob(x), exact, rtol=0, atol=1e-9)


def test_calibration_formula_and_errors():
    u = torch.tensor([10.0, 12.0, 14.0])
    c, stderr = log_norm_const_from_energies(u, dims=5, t_max=100.0)
    assert c == pytest.approx(2.5 * math.log(2 * math.pi * math.e * 100.0) - 12.0)
    assert stderr == pytest.approx(2.0 / math.sqrt(3))
    assert gaussian_entropy(1, 1.0) == pytest.approx(0.5 * math.log(2 * math.pi * math.e))
    with pytest.raises(ValueError, match="NaN"):
        log_norm_const_from_energies(torch.tensor([1.0, float("nan")]), 5, 100.0)


def test_calibrate_refuses_8bit_nan_and_0_255_images(field):
    energy = GaussianEnergy(field)
    x = field.sample(4, torch.Generator().manual_seed(0)).clamp(0, 1)
    with pytest.raises(TypeError, match="divide 8-bit data by 255"):
        energy.calibrate((x * 255).round().to(torch.uint8))
    with pytest.raises(ValueError, match="divide 8-bit data by 255"):
        energy.calibrate(x * 255)
    with pytest.raises(ValueError, match="NaN"):
        energy.calibrate(torch.where(x > 0.6, torch.nan, x))
    assert not energy.is_calibrated  # nothing was stored


def test_log_prob_refuses_nan(field):
    energy = GaussianEnergy(field)
    energy.log_norm_const.fill_(0.0)
    x = torch.full((1, 1, 8, 8), 0.5, dtype=torch.float64)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        energy.log_prob(x)


# ---- dual score matching losses --------------------------------------------------------------------
def _losses(energy, x, t, z):
    y = x + t.sqrt().view(-1, 1, 1, 1) * z
    _, grad_y, grad_t = energy.scores(y, t)
    return dsm_loss(y - t.view(-1, 1, 1, 1) * grad_y, x, t), tsm_loss(grad_t, y, x, t)


class TimeShifted(GaussianEnergy):
    """The exact energy plus a function of t alone: same ∇_y U (same denoiser), wrong ∂_t U."""

    def energy(self, y, t):
        t = torch.as_tensor(t, dtype=torch.float64).expand(y.shape[0])
        return super().energy(y, t) + 0.3 * self.field.num_pixels * torch.log1p(t / 0.01)


def test_losses_are_minimized_at_the_exact_gaussian_energy(field):
    g = torch.Generator().manual_seed(0)
    n = 2048
    x = field.sample(n, g, dtype=torch.float64)
    t = 10 ** (-4 + 5 * torch.rand(n, generator=g, dtype=torch.float64))
    z = torch.randn(x.shape, generator=g, dtype=torch.float64)  # common random numbers for every model
    dsm0, tsm0 = (v.mean() for v in _losses(GaussianEnergy(field), x, t, z))
    assert 0.2 < dsm0 < 1.0 and 0.001 < tsm0 < 1 / (2 * field.num_pixels)  # irreducible parts; Var(‖z‖²/2d) = 1/2d
    for scale in (0.7, 1.4):
        dsm, tsm = (v.mean() for v in _losses(GaussianEnergy(field, spectrum_scale=scale), x, t, z))
        assert dsm > dsm0 * 1.005 and tsm > tsm0 * 1.005, (scale, dsm, dsm0, tsm, tsm0)
    dsm, tsm = (v.mean() for v in _losses(TimeShifted(field), x, t, z))
    torch.testing.assert_close(dsm, dsm0)  # ∇_y U unchanged
    assert tsm > tsm0 * 1.05
    dsm, tsm = (v.mean() for v in _losses(GaussianEnergy(field, offset=50.0), x, t, z))
    torch.testing.assert_close((dsm, tsm), (dsm0, tsm0))  # blind to the normalization constant: hence calibrate


def test_tsm_gradient_has_zero_mean_at_the_exact_energy(field):
    """d/dε E[ℓ_TSM(U + ε·g)] = 0 at ε = 0 (within Monte-Carlo error), but not at a wrong energy."""
    g = torch.Generator().manual_seed(3)
    n = 4096
    x = field.sample(n, g, dtype=torch.float64)
    t = 10 ** (-4 + 5 * torch.rand(n, generator=g, dtype=torch.float64))
    z = torch.randn(x.shape, generator=g, dtype=torch.float64)
    y = x + t.sqrt().view(-1, 1, 1, 1) * z
    d = field.num_pixels

    def per_sample_grad(model):
        # One ε per sample, all zero: ∂(Σ_i ℓ_i)/∂ε_i = ∂ℓ_i/∂ε. Perturbation g(y, t) = d·log(1 + t), ∂_t g = d/(1 + t).
        eps = torch.zeros(n, dtype=torch.float64, requires_grad=True)
        _, _, grad_t = model.scores(y, t)
        loss = tsm_loss(grad_t + eps * d / (1 + t), y, x, t)
        (grad,) = torch.autograd.grad(loss.sum(), eps)
        return grad

    exact = per_sample_grad(GaussianEnergy(field))
    stderr = exact.std() / math.sqrt(n)
    assert abs(exact.mean()) < 4 * stderr
    wrong = per_sample_grad(GaussianEnergy(field, spectrum_scale=1.5))
    assert abs(wrong.mean()) > 10 * wrong.std() / math.sqrt(n)


def test_losses_validate_inputs():
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="> 0"):
        dsm_loss(x, x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        tsm_loss(torch.zeros(3), x, x, torch.ones(2))


# ---- precision and data checks ---------------------------------------------------------------------
def test_full_precision_switches_off_tf32_and_autocast_and_restores():
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with full_precision():
                if energy_module._NEW_TF32_API:
                    assert torch.backends.cudnn.conv.fp32_precision == "ieee"
                    assert torch.backends.cuda.matmul.fp32_precision == "ieee"
                else:
                    assert not torch.backends.cudnn.allow_tf32
                    assert torch.get_float32_matmul_precision() == "highest"
                assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32 = before


@pytest.mark.skipif(not energy_module._NEW_TF32_API, reason="torch without the fp32_precision flags")
def test_full_precision_with_tf32_set_through_the_new_api(field):
    # A user who enabled TF32 with torch's per-backend flags: reading the legacy flags would raise here.
    saved = (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision,
             torch.backends.mkldnn.matmul.fp32_precision)
    try:
        torch.backends.cudnn.conv.fp32_precision = "tf32"
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"  # bf16 matmuls on a CPU with oneDNN
        energy = GaussianEnergy(field)
        energy.calibrate(field.sample(8, torch.Generator().manual_seed(0)), t_max=1e3)
        assert torch.isfinite(energy.log_prob(field.sample(2, torch.Generator().manual_seed(1)))).all()
        with full_precision():
            assert torch.backends.cuda.matmul.fp32_precision == "ieee"
            assert torch.backends.mkldnn.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"
    finally:
        (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision,
         torch.backends.mkldnn.matmul.fp32_precision) = saved


def test_check_quantized():
    x = torch.randint(0, 256, (2, 1, 4, 4)).float() / 255
    assert check_quantized(x) is x
    with pytest.raises(ValueError, match="8-bit"):
        check_quantized(x + 0.3 / 255 * (x < 1))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_quantized(x * 255)


# ---- the public denoiser net(y, sigma) is differentiable ------------------------------------------
def test_public_denoiser_jacobian_is_symmetric_not_the_identity_and_matches_finite_differences():
    """∂x̂/∂y of ``net(y, sigma)`` = I − t∇²U, through autograd (analysis, deepinv's DPS) as through finite differences.

    The denoiser used to detach ∇U, so autograd saw ∂x̂/∂y = I (trace N, asymmetry 0) whatever the network.
    """
    from priorlab.analysis.jacobian import JacobianOperator

    net = tiny_net()
    g = torch.Generator().manual_seed(2)
    y = 0.5 + 0.3 * torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=g)
    sigma = 1.0  # t = 1: the tiny random network's −t∇²U is then well above rounding
    eye = torch.eye(64, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: net(v, sigma).flatten(), y).reshape(64, 64)
    assert (jac - eye).abs().max() > 1e-3  # not the identity
    torch.testing.assert_close(jac, jac.T, rtol=1e-8, atol=1e-10)  # a gradient field: symmetric
    h, basis = 1e-5, eye.reshape(64, 1, 8, 8)
    with torch.no_grad():  # the cheap, detached path
        fd = (net(y + h * basis, sigma) - net(y - h * basis, sigma)).reshape(64, 64).T / (2 * h)
        assert not net(y, sigma).requires_grad
    torch.testing.assert_close(jac - eye, fd - eye, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(JacobianOperator(net, y, sigma).matrix(), jac, rtol=1e-8, atol=1e-10)
    net.zero_grad()
    net(y, sigma).square().sum().backward()  # gradients reach the parameters too
    assert net.unet.final.weight.grad.abs().sum() > 0
    with torch.inference_mode(), pytest.raises(RuntimeError, match="no_grad"):
        net(y, sigma)


# ---- the image shape the normalization constant holds for -------------------------------------------
def test_log_prob_refuses_images_of_another_shape_than_the_calibration_and_the_denoiser_does_not():
    net = tiny_net()
    assert net.calibration_shape is None
    net.calibrate(torch.rand(8, 1, 8, 8, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    assert net.calibration_shape == (1, 8, 8)
    assert torch.isfinite(net.log_prob(torch.rand(2, 1, 8, 8, dtype=torch.float64))).all()
    for shape in ((1, 1, 12, 12), (1, 1, 8, 16)):  # valid sizes for the network (multiples of 4), not for C
        with pytest.raises(ValueError, match=r"calibrated for 1x8x8 images .* are 1x\d+x\d+.*[Rr]esize or crop"):
            net.log_prob(torch.rand(shape, dtype=torch.float64))
        with torch.no_grad():
            assert net(torch.rand(shape, dtype=torch.float64), 0.1).shape == shape
    net.calibrate(torch.rand(4, 1, 12, 12, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    assert net.calibration_shape == (1, 12, 12)  # recalibrating moves the shape with C
    with pytest.raises(ValueError, match="calibrated for 1x12x12"):
        net.log_prob(torch.rand(1, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        net.calibration_shape = (8, 8)


def test_the_calibration_shape_survives_the_state_dict_and_older_state_dicts_still_load():
    net = tiny_net()
    net.calibrate(torch.rand(4, 1, 8, 8, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    state = net.state_dict()
    assert state["log_norm_shape"].tolist() == [1, 8, 8]
    fresh = create_model("test_energy_unet", in_chans=1).double()
    fresh.load_state_dict(state, strict=True)
    assert fresh.calibration_shape == (1, 8, 8)
    # A state dict from before the shape was recorded: loads strictly, shape unknown, log_prob warns.
    legacy = {k: v for k, v in state.items() if k != "log_norm_shape"}
    fresh.load_state_dict(legacy, strict=True)
    assert fresh.calibration_shape is None
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    with pytest.warns(UserWarning, match="does not record the image shape"):
        fresh.log_prob(x)
    fresh.prior_config = {"calibration_shape": [1, 8, 8]}  # what an older prior's config.json can declare
    assert fresh.calibration_shape == (1, 8, 8)
    with pytest.raises(ValueError, match="calibrated for 1x8x8"):
        fresh.log_prob(x)
    fresh.calibration_shape = (1, 12, 12)  # the buffer, when set, wins
    assert torch.isfinite(fresh.log_prob(x)).all()
    with pytest.raises(RuntimeError, match="Unexpected key"):
        fresh.load_state_dict({**state, "bogus": torch.zeros(1)}, strict=True)  # still strict otherwise


def test_the_calibration_shape_travels_through_export_and_a_lightning_checkpoint(tmp_path):
    import lightning.pytorch as pl

    from priorlab import zoo
    from priorlab.lightning_modules import DualScoreModule
    from priorlab.zoo.checkpoint import load_checkpoint

    net = create_model("test_energy_unet", in_chans=1)
    net.calibrate(torch.rand(4, 1, 12, 8), generator=torch.Generator().manual_seed(0))
    config = zoo.build_config(net, kind="energy", sigma_range_255=[0.01, 8000.0])
    loaded = zoo.load(f"local-dir:{zoo.save_folder(net, config, tmp_path / 'prior')}")
    assert loaded.calibration_shape == (1, 12, 8)
    with pytest.raises(ValueError, match="calibrated for 1x12x8"):
        loaded.log_prob(torch.rand(1, 1, 8, 8))

    # DualScoreModule calibrates C on the validation images and checkpoints their shape with it.
    torch.manual_seed(0)
    module = DualScoreModule(arch="test_energy_unet", in_chans=1, val_psnr_in=(20.0,))
    images = torch.randint(0, 256, (4, 1, 8, 12), generator=torch.Generator().manual_seed(0)) / 255.0
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, inference_mode=False)
    trainer.validate(module, dataloaders=torch.utils.data.DataLoader(images, batch_size=2), verbose=False)
    assert module.net.calibration_shape == (1, 8, 12)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    ckpt_net = load_checkpoint(tmp_path / "m.ckpt")
    assert ckpt_net.calibration_shape == (1, 8, 12) and ckpt_net.prior_config["calibration"]["shape"] == [1, 8, 12]
    torch.testing.assert_close(ckpt_net.log_prob(images), module.net.log_prob(images))
    mixed = [images[:2], images[:2, :, :, :8]]  # one C cannot hold for two dimensions
    with pytest.raises(ValueError, match="one shape"):
        trainer.validate(module, dataloaders=torch.utils.data.DataLoader(mixed, batch_size=None), verbose=False)


@pytest.mark.parametrize("name", ["dsm-energy-small-fashion-mnist", "dsm-energy-fashion-mnist"])
def test_bundled_energy_priors_know_their_28x28_calibration(name):
    from priorlab import zoo

    net = zoo.load(name)  # weights unchanged (the catalog's sha256 is checked); the shape is in config.json
    assert net.calibration_shape == (1, 28, 28)
    x = torch.randint(0, 256, (2, 1, 28, 28), generator=torch.Generator().manual_seed(0)) / 255.0
    assert torch.isfinite(net.log_prob(x)).all()
    with pytest.raises(ValueError, match=r"calibrated for 1x28x28 images .* 1x32x32.*28x28"):
        net.log_prob(torch.rand(1, 1, 32, 32))
