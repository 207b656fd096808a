import pytest
import timm
import torch
from torch import nn

from priorlab import zoo
from priorlab.zoo import BFBatchNorm2d, create_model, list_models
from priorlab.zoo.registry import register_model

TINY = [n for n in list_models() if n.startswith("test_")]
ALL = list_models()
# Blind denoisers only: energy models (family "energy") need sigma and are tested in tests/test_energy.py.
TINY_DENOISERS = [n for n in TINY if zoo.get_spec(n).family != "energy"]
ALL_DENOISERS = [n for n in ALL if zoo.get_spec(n).family != "energy"]


def _eval_model(name, in_chans=1, **kw):
    torch.manual_seed(0)
    m = create_model(name, in_chans=in_chans, **kw)
    # Put non-trivial statistics into the running buffers before switching to eval mode.
    m.train()
    with torch.no_grad():
        m(torch.rand(4, in_chans, 32, 32))
    return m.eval()


def test_registry_lists_every_family_with_a_tiny_variant():
    assert {"bf_dncnn", "dncnn", "bf_unet", "unet", "test_bf_dncnn", "test_bf_unet"} <= set(ALL)
    families = {zoo.get_spec(n).family for n in ALL}
    assert families == {zoo.get_spec(n).family for n in TINY}
    assert list_models("*unet*") == sorted(n for n in ALL if "unet" in n)


def test_paper_parameter_counts():
    # algorithms.md §2.3 and §2.5 (counted from the reference code)
    assert sum(p.numel() for p in create_model("bf_dncnn").parameters()) == 664_704 + 1_152
    assert sum(p.numel() for p in create_model("bf_unet").parameters()) == 7_659_264


@pytest.mark.parametrize("name", TINY_DENOISERS)
@pytest.mark.parametrize("in_chans", [1, 3])
def test_forward_shape_dtype_odd_sizes(name, in_chans):
    m = _eval_model(name, in_chans)
    for shape in [(2, in_chans, 37, 31), (1, in_chans, 16, 16)]:
        y = torch.rand(shape)
        out = m(y)
        assert out.shape == y.shape and out.dtype == y.dtype
        assert m(y, sigma=0.1).equal(out)  # blind: sigma is accepted and ignored


@pytest.mark.slow
@pytest.mark.parametrize("name", TINY_DENOISERS)
def test_networks_compile_without_graph_breaks(name):
    """The input checks (shape, dtype, autocast) and the UNet's padding stay inside one compiled graph: a graph
    break would cost every compiled training step on a GPU (DenoiserModule(compile=True))."""
    net = zoo.create_model(name, in_chans=1).train()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")  # raises on a graph break
    x = torch.rand(2, 1, 18, 18)  # not a multiple of the UNet's 2^blocks: the padding path
    assert compiled(x).shape == x.shape
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compiled(x).shape == x.shape


@pytest.mark.parametrize("name", [n for n in ALL_DENOISERS if not zoo.get_spec(n).defaults.get("bias")])
def test_bias_free_models_have_no_additive_constants(name):
    m = create_model(name, **({"depth": 4, "width": 4} if "dncnn" in name else {"width": 2}))
    for mod in m.modules():
        assert not isinstance(mod, nn.BatchNorm2d), f"{name} has an ordinary batch norm"
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            assert mod.bias is None
    assert not any("bias" in k for k, _ in m.named_parameters())


@pytest.mark.parametrize("name", TINY_DENOISERS)
def test_homogeneity_in_eval_mode(name):
    m = _eval_model(name)
    for size in ((24, 20), (23, 21)):  # 23x21: the UNet's reflect padding to a multiple of its size, cropped back
        y = torch.rand(2, 1, *size)
        with torch.no_grad():
            for alpha in (0.1, 2.5, 30.0):
                torch.testing.assert_close(m(alpha * y), alpha * m(y), rtol=1e-4, atol=1e-5 * alpha)


@pytest.mark.parametrize("name", TINY_DENOISERS)
def test_homogeneity_fails_for_the_biased_counterpart(name):
    m = _eval_model(name, bias=True)
    for mod in m.modules():  # biases are zero at init; make them matter
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)) and mod.bias is not None:
            nn.init.uniform_(mod.bias, 0.05, 0.2)
    y = torch.rand(2, 1, 24, 20)
    with torch.no_grad():
        assert (m(10 * y) - 10 * m(y)).abs().max() > 1e-2


@pytest.mark.parametrize("name", TINY_DENOISERS)
@pytest.mark.parametrize("bias", [False, True])
def test_gradients_reach_every_parameter(name, bias):
    m = create_model(name, bias=bias).train()
    y = torch.rand(3, 1, 24, 24)
    ((m(y) - y) ** 2).mean().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", TINY_DENOISERS)
@pytest.mark.parametrize("in_chans", [1, 3])
def test_timm_parity(name, in_chans):
    ours = create_model(name, in_chans=in_chans)
    theirs = timm.create_model(name, in_chans=in_chans)
    assert type(ours) is type(theirs)
    assert ours.arch_config == theirs.arch_config
    theirs.load_state_dict(ours.state_dict(), strict=True)
    y = torch.rand(1, in_chans, 16, 16)
    torch.testing.assert_close(ours.eval()(y), theirs.eval()(y))
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model(name, pretrained=True)


def test_bf_batchnorm_matches_hand_computation():
    bn = BFBatchNorm2d(3, momentum=0.1)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.randn(4, 3, 5, 6) + 3.0  # a large mean: it must NOT be subtracted
    out = bn.train()(x)
    std = x.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=True)
    expected = x * (bn.weight.detach() / (std + 1e-5)).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(bn.running_var, std**2)  # warm start: the first batch is copied
    x2 = torch.randn(4, 3, 5, 6) * 2.0
    bn(x2)
    std2 = x2.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=True)
    torch.testing.assert_close(bn.running_var, 0.9 * std**2 + 0.1 * std2**2)
    out_eval = bn.eval()(x)
    expected_eval = x * (bn.weight.detach() / (bn.running_var.sqrt() + 1e-5)).view(1, 3, 1, 1)
    torch.testing.assert_close(out_eval, expected_eval)
    assert set(bn.state_dict()) == {"weight", "running_var", "stats_initialized"}


def test_bf_batchnorm_loads_weights_saved_without_the_warm_start_flag():
    bn = BFBatchNorm2d(2)
    old = {"weight": torch.tensor([0.5, 0.25]), "running_var": torch.tensor([4.0, 9.0])}
    bn.load_state_dict(old, strict=True)
    assert float(bn.stats_initialized) == 1.0
    with pytest.raises(RuntimeError, match="Missing"):
        bn.load_state_dict({"weight": torch.ones(2)}, strict=True)


def test_bf_batchnorm_variant_b_matches_hand_computation():
    # Variant B (the 2021-2024 references, the ICLR 2024 UNet): biased variance, eps inside the root, running std.
    from priorlab.zoo.layers import BFBatchNorm2dB

    torch.manual_seed(0)
    bn = BFBatchNorm2dB(3, momentum=0.1)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.randn(4, 3, 5, 6) + 3.0  # a large mean: it must NOT be subtracted
    sd = (x.permute(1, 0, 2, 3).reshape(3, -1).var(dim=1, unbiased=False) + 1e-5).sqrt()
    torch.testing.assert_close(bn.train()(x), x * (bn.weight.detach() / sd).view(1, 3, 1, 1))
    torch.testing.assert_close(bn.running_sd, sd)  # warm start: the first batch is copied
    x2 = torch.randn(4, 3, 5, 6) * 2.0
    bn(x2)
    sd2 = (x2.permute(1, 0, 2, 3).reshape(3, -1).var(dim=1, unbiased=False) + 1e-5).sqrt()
    torch.testing.assert_close(bn.running_sd, 0.9 * sd + 0.1 * sd2)  # momentum on the std, not the variance
    torch.testing.assert_close(bn.eval()(x), x * (bn.weight.detach() / bn.running_sd).view(1, 3, 1, 1))
    assert set(bn.state_dict()) == {"weight", "running_sd", "stats_initialized"}
    w = BFBatchNorm2dB(10_000).weight.detach()
    assert 0.003 < w.std() < 0.004 and (w.abs() >= 0.025 - 1e-6).float().mean() < 1e-3  # effectively unclamped


def test_variant_a_weights_load_into_variant_b_with_the_same_output():
    from priorlab.zoo.layers import BFBatchNorm2dB

    a = BFBatchNorm2d(2)
    a.load_state_dict({"weight": torch.tensor([0.5, -0.25]), "running_var": torch.tensor([4.0, 0.01])})
    b = BFBatchNorm2dB(2)
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(3, 2, 4, 4)
    torch.testing.assert_close(b.eval()(x), a.eval()(x))
    unet = create_model("test_bf_unet", in_chans=1)
    assert {type(m).__name__ for m in unet.modules() if "BatchNorm" in type(m).__name__} == {"BFBatchNorm2dB"}


def test_biased_batchnorm_warm_starts_too():
    from priorlab.zoo.layers import batch_norm

    bn = batch_norm(3, bias=True).train()
    x = torch.randn(4, 3, 5, 6) * 0.01 + 2.0
    bn(x)
    flat = x.permute(1, 0, 2, 3).reshape(3, -1)
    torch.testing.assert_close(bn.running_mean, flat.mean(dim=1))
    torch.testing.assert_close(bn.running_var, flat.var(dim=1, unbiased=True))
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 1
    bn(x * 0 + 1.0)
    torch.testing.assert_close(bn.running_mean, 0.9 * flat.mean(dim=1) + 0.1)


def test_bf_batchnorm_gain_init_follows_reference():
    torch.manual_seed(0)
    w = BFBatchNorm2d(10_000).weight.detach()
    assert w.abs().max() <= 0.025 + 1e-7
    assert 0.55 < (w.abs() > 0.025 - 1e-6).float().mean() < 0.8  # about two thirds clamped


def test_biased_counterpart_starts_near_the_identity_like_the_bias_free_net():
    # The biased DnCNN's gains start as the reference's (not PyTorch's gamma = 1), so both nets'
    # initial residuals are small; with gamma = 1 the biased residual is O(1) and it trains far slower.
    from priorlab.zoo.layers import batch_norm

    torch.manual_seed(0)
    bn = batch_norm(10_000, bias=True)
    assert bn.weight.abs().max() <= 0.025 + 1e-7 and torch.all(bn.bias == 0)
    y = torch.rand(8, 1, 40, 40)
    ratios = {}
    for bias in (False, True):
        torch.manual_seed(0)
        m = create_model("dncnn_small" if bias else "bf_dncnn_small", in_chans=1).train()
        with torch.no_grad():
            ratios[bias] = float((m(y) - y).norm() / y.norm())
    assert ratios[True] < 0.1 and ratios[False] < 0.1, ratios


def test_create_model_errors_are_helpful():
    with pytest.raises(KeyError, match="bf_dncnn"):
        create_model("bf_dncn")
    with pytest.raises(ValueError, match="no '/'"):
        create_model("org/repo")
    with pytest.raises(TypeError, match="unknown argument"):
        create_model("bf_dncnn", num_layers=3)


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):

        @register_model(zoo.DnCNN, family="dncnn")
        def bf_dncnn(pretrained=False, **kwargs):
            """duplicate"""


def test_build_from_config_round_trip():
    m = create_model("test_bf_unet", in_chans=3)
    again = zoo.build_from_config(m.arch_config)
    assert again.arch_config == m.arch_config
    again.load_state_dict(m.state_dict(), strict=True)
    with pytest.raises(ValueError):
        zoo.build_from_config({"nope": 1})


def test_unet_rejects_images_below_minimum_size():
    m = create_model("test_bf_unet").eval()
    with pytest.raises(ValueError, match="minimum size"):
        m(torch.rand(1, 1, 3, 16))


def test_load_refuses_unknown_names_and_missing_files(tmp_path):
    with pytest.raises(KeyError, match="unknown prior 'bf-dncnn-gray'"):
        zoo.load("bf-dncnn-gray")
    with pytest.raises(FileNotFoundError):
        zoo.load(tmp_path / "missing.ckpt")


class _NotATensor:
    pass


def test_load_refuses_files_that_are_not_safe_checkpoints(tmp_path):
    """A pickle of an arbitrary object is never unpickled, and the message does not advise weights_only=False
    (torch's own text does)."""
    pickled = tmp_path / "object.ckpt"
    torch.save({"state_dict": {}, "thing": _NotATensor()}, pickled)
    image = tmp_path / "photo.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    for path in (pickled, image):
        with pytest.raises(ValueError, match="not a file written by `priorlab fit`") as err:
            zoo.load(path)
        assert "weights_only=False" not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("name", "width"), [("bf_dncnn_small", 21), ("bf_unet_small", 92)])
def test_receptive_field_of_the_small_variants(name, width):
    """The small DnCNN sees 21x21 pixels, the small UNet 92x92 (why it fills large holes): the output pixel's
    gradient is non-zero exactly on that window of the input."""
    m = _eval_model(name)
    x = torch.rand(1, 1, 160, 160, requires_grad=True)
    m(x)[0, 0, 80, 80].backward()
    rows, cols = (x.grad[0, 0].abs() > 0).nonzero().T
    assert int(rows.max() - rows.min()) + 1 == width and int(cols.max() - cols.min()) + 1 == width


@pytest.mark.parametrize("order", ["priorlab-first", "timm-first"])
def test_timm_names_work_whichever_is_imported_first_and_priorlab_does_not_import_timm(order):
    import subprocess
    import sys

    first = ("from priorlab import zoo\nassert 'timm' not in sys.modules, 'priorlab.zoo imported timm'\nimport timm\n"
             if order == "priorlab-first" else "import timm\nfrom priorlab import zoo\n")
    code = ("import sys\n" + first + "assert timm.is_model('bf_dncnn') and timm.is_model('energy_unet_small')\n"
            "net = timm.create_model('test_bf_dncnn', in_chans=3)\n"
            "assert type(net).__name__ == 'DnCNN' and net.arch_config['init_args']['in_chans'] == 3\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_load_on_a_missing_gpu_says_to_use_the_cpu():
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match="no CUDA GPU.*--device cpu"):
            zoo.load("bf-dncnn-small-gray", map_location=device)
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        zoo.load("bf-dncnn-small-gray", map_location="gpu0")
