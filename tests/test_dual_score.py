"""DualScoreModule: training, validation NLL, checkpoints with the normalization constant, Lightning pitfalls."""

import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy

from priorlab.datamodules import FashionMNISTDataModule
from priorlab.lightning_modules import EMA, DualScoreModule
from priorlab.zoo import load, load_checkpoint
from tests.helpers import assert_ddp_matches_one_process, tiny_trainer
from tests.test_fashion_mnist import tiny_fashion_mnist

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_module(**kw) -> DualScoreModule:
    args = dict(arch="test_energy_unet", in_chans=1, val_psnr_in=(20.0, 10.0), lr=1e-3)
    args.update(kw)
    return DualScoreModule(**args)


@pytest.fixture
def data(tmp_path) -> FashionMNISTDataModule:
    root = tiny_fashion_mnist(tmp_path / "fmnist", n_train=48, n_test=8)
    return FashionMNISTDataModule(root=str(root), val_size=16, batch_size=8, eval_batch_size=8)


def _fit(tmp_path, module, data, **kw):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    args = dict(max_steps=3, val_check_interval=3, inference_mode=False, callbacks=[ckpt, *kw.pop("callbacks", [])])
    args.update(kw)
    trainer = tiny_trainer(tmp_path, **args)
    trainer.fit(module, datamodule=data)
    return trainer, tmp_path / "ckpt" / "last.ckpt"


@pytest.mark.slow
def test_fit_logs_terms_psnr_and_bpd_and_checkpoint_carries_the_constant(tmp_path, data):
    module = tiny_module()
    trainer, last = _fit(tmp_path, module, data, callbacks=[EMA(decay=0.5)])
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for key in ("train/loss", "val/dsm", "val/tsm", "val/loss", "val/psnr_in20", "val/psnr_in10", "val/psnr",
                "val/bpd", "val/log_norm_const"):
        assert key in metrics and torch.isfinite(torch.tensor(metrics[key])), key
    assert metrics["val/psnr_in20"] > metrics["val/psnr_in10"]
    c = metrics["val/log_norm_const"]
    assert module.net.log_norm_const.item() == pytest.approx(c, rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # C was calibrated at the last step: no staleness warning
        net = load(last)  # zoo.load → load_checkpoint: rebuilt through the registry, strict, no pickles
    assert type(net) is type(module.net) and net.prior_config["kind"] == "energy"
    assert net.prior_config["calibration"]["split"] == "validation"
    assert net.log_norm_const.item() == pytest.approx(c, rel=1e-6)
    # The checkpoint holds the EMA weights; C was computed for them in validation and reproduces val/bpd.
    x = data.images("val")
    from priorlab.core.likelihood import bits_per_dim

    bpd = bits_per_dim(-net.log_prob(x), x[0].numel()).mean()
    assert float(bpd) == pytest.approx(metrics["val/bpd"], rel=1e-4)
    torch.testing.assert_close(net.log_prob(x), module.net.log_prob(x))  # on_train_end restored C after EMA copy
    y = x[:2] + 0.1 * torch.randn_like(x[:2])
    torch.testing.assert_close(net(y, 0.1), module.net.eval()(y, 0.1))


def test_a_checkpoint_whose_constant_is_stale_says_so(tmp_path, data):
    """Training went on after the last validation: the stored C belongs to other weights."""
    trainer, _ = _fit(tmp_path, tiny_module(), data, max_steps=3, val_check_interval=2)
    with pytest.warns(UserWarning, match="validation at step 2"):
        trainer.save_checkpoint(tmp_path / "end.ckpt")
    with pytest.warns(UserWarning, match="calibrated at step 2 but these weights are from step 3"):
        load(tmp_path / "end.ckpt")


def test_save_load_identity_of_an_energy_network(tmp_path):
    module = tiny_module()
    module.net.calibrate(torch.rand(8, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    net = load_checkpoint(path)
    for k, v in module.net.state_dict().items():
        torch.testing.assert_close(net.state_dict()[k], v, msg=k)
    assert torch.isfinite(net.log_norm_const)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(net.log_prob(x), module.net.log_prob(x))


def test_the_network_is_told_the_smallest_training_variance():
    module = DualScoreModule(arch="test_energy_unet", in_chans=1, log10_t_range=(-6.0, 3.0))
    assert module.net.arch_config["init_args"]["min_variance"] == pytest.approx(1e-6)  # travels with the weights
    assert module.net.unet.embed.min_variance == pytest.approx(1e-6)
    chosen = DualScoreModule(arch="test_energy_unet", in_chans=1, arch_args={"min_variance": 1e-7})
    assert chosen.net.unet.embed.min_variance == pytest.approx(1e-7)  # an explicit choice wins


def test_inference_mode_true_is_refused_with_the_fix(tmp_path, data):
    trainer = tiny_trainer(tmp_path)  # Trainer default inference_mode=True
    with pytest.raises(ValueError, match="inference_mode: false"):
        trainer.fit(tiny_module(), datamodule=data)


def test_validate_runs_with_inference_mode_false(tmp_path, data):
    trainer = tiny_trainer(tmp_path, inference_mode=False, limit_val_batches=1)
    out = trainer.validate(tiny_module(), datamodule=data, verbose=False)[0]
    assert torch.isfinite(torch.tensor(out["val/bpd"]))


def test_compile_static_graph_and_bad_ranges_are_refused(tmp_path, data):
    with pytest.raises(ValueError, match="double backward"):
        tiny_module(compile=True)
    with pytest.raises(ValueError, match="log10_t_range"):
        tiny_module(log10_t_range=(3.0, -9.0))
    with pytest.raises(ValueError, match="energy"):
        tiny_module(arch="test_bf_dncnn")
    trainer = tiny_trainer(tmp_path, strategy=DDPStrategy(static_graph=True), devices=1, inference_mode=False)
    with pytest.raises(ValueError, match="static_graph"):
        trainer.fit(tiny_module(), datamodule=data)


class Batches(pl.LightningDataModule):
    def __init__(self, images):
        super().__init__()
        self.images = images

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.images, batch_size=4)


@pytest.mark.parametrize("bad,match", [("nan", "NaN"), ("not8bit", "8-bit"), ("size", "multiple of 4")])
def test_bad_validation_data_gets_clear_errors(tmp_path, bad, match):
    x = torch.randint(0, 256, (4, 1, 28, 28)).float() / 255
    if bad == "nan":
        x[0, 0, 0, 0] = float("nan")
    elif bad == "not8bit":
        x = torch.rand(4, 1, 28, 28)
    else:
        x = x[..., :26, :26]
    trainer = tiny_trainer(tmp_path, inference_mode=False)
    with pytest.raises(ValueError, match=match):
        trainer.validate(tiny_module(), datamodule=Batches(x), verbose=False)


@pytest.mark.slow
def test_bf16_mixed_training_and_init_from(tmp_path, data):
    module = tiny_module()
    trainer, last = _fit(tmp_path, module, data, precision="bf16-mixed")
    assert torch.isfinite(torch.tensor(float(trainer.callback_metrics["train/loss"])))
    assert all(p.dtype == torch.float32 for p in load_checkpoint(last).parameters())
    tuned = tiny_module(init_from=str(last))
    for k, v in module.net.state_dict().items():
        torch.testing.assert_close(tuned.net.state_dict()[k], v)
    with pytest.raises(ValueError, match="arch"):
        tiny_module(init_from=str(last), arch_args={"width": 8})


@pytest.mark.slow
def test_training_reduces_the_loss(tmp_path, data):
    torch.manual_seed(0)
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    module = tiny_module(lr=1e-2, log10_t_range=(-2.0, 0.0))
    # Images on a line a·P (one fixed pattern): the optimal denoiser projects the noise away, so the DSM term
    # can fall far below its value 1 for the identity denoiser.
    g = torch.Generator().manual_seed(0)
    pattern = torch.randn(1, 1, 8, 8, generator=g)
    pattern = (pattern - pattern.mean()) / (pattern - pattern.mean()).abs().max()
    images = 0.5 + 0.45 * (2 * torch.rand(64, 1, 1, 1, generator=g) - 1) * pattern
    _fit(tmp_path, module, FixedImages(batch_size=8, images=images), max_steps=60, val_check_interval=None,
         limit_val_batches=0, callbacks=[Record()])
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.85 * first, (first, last)


# ---- DDP parity ------------------------------------------------------------------------------------
class FixedNoiseModule(DualScoreModule):
    """Noise and t as fixed functions of the image, so one and two processes see the same batch."""

    def __init__(self, grad_dir: str = "", **kw):
        super().__init__(**kw)
        self.grad_dir = grad_dir

    def corrupt(self, x):
        t = 0.01 + x.flatten(1).mean(1)
        return x + t.sqrt().view(-1, 1, 1, 1) * torch.sin(1000.0 * x + 1.0), t

    def on_after_backward(self):
        if self.global_step == 0:
            grads = {n: p.grad.detach().clone() for n, p in self.net.named_parameters()}
            torch.save(grads, Path(self.grad_dir) / f"grads_{self.trainer.world_size}_{self.global_rank}.pt")


class FixedImages(pl.LightningDataModule):
    def __init__(self, batch_size: int, images: torch.Tensor | None = None):
        super().__init__()
        self.batch_size = batch_size
        self.images = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)) if images is None else images

    def train_dataloader(self):
        return torch.utils.data.DataLoader(list(self.images), batch_size=self.batch_size, shuffle=False)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_on_the_full_batch(tmp_path, monkeypatch):
    """Double backward under DDP (no static_graph) gives the one-process gradient (ecosystem.md §6.3)."""
    common = dict(arch="test_energy_unet", in_chans=1, grad_dir=str(tmp_path), val_psnr_in=(20.0,))
    assert_ddp_matches_one_process(tmp_path, monkeypatch, lambda: FixedNoiseModule(**common), FixedImages,
                                   inference_mode=False)


def test_fine_tuning_starts_from_the_bundled_energy_prior_by_name():
    ref = load("dsm-energy-small-fashion-mnist")
    module = DualScoreModule(arch="energy_unet_small", arch_args={"width": 16, "num_layers": 2}, in_chans=1,
                             init_from="dsm-energy-small-fashion-mnist")
    for (k, a), (_, b) in zip(module.net.state_dict().items(), ref.state_dict().items(), strict=True):
        assert torch.equal(a, b.to(a.dtype)), k
    with pytest.raises(ValueError, match="arch"):
        DualScoreModule(arch="energy_unet_small", in_chans=1, init_from="dsm-energy-small-fashion-mnist")


@pytest.mark.parametrize("name", ["dsm-energy-small-fashion-mnist", "dsm-energy-fashion-mnist"])
def test_bundled_energy_models_give_fashion_mnist_test_images_their_measured_bits_per_dim(name):
    from priorlab.core.likelihood import bits_per_dim
    from priorlab.datamodules import load_fashion_mnist
    from priorlab.datamodules.fashion_mnist import DEBIAN_ROOT

    if not DEBIAN_ROOT.is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist (installed by .ci/run)")
    net = load(name)
    x = load_fashion_mnist("test")[:200].float() / 255
    bpd = bits_per_dim(-net.log_prob(x), x[0].numel())
    # The cards say 3.35 / 3.34 bits/dim over all 10,000 (standard error of 200 images: about 0.07); a wrong C,
    # wrong weights or a broken t -> 0 embedding move it by whole bits.
    assert 2.9 < float(bpd.mean()) < 3.8
    # Images of the same size that are not garments are far less probable.
    noise = torch.randint(0, 256, (20, 1, 28, 28), generator=torch.Generator().manual_seed(0)).float() / 255
    assert float(bits_per_dim(-net.log_prob(noise), 28 * 28).min()) > float(bpd.max())


def test_resuming_restores_the_calibration_record(tmp_path, data):
    """fit --ckpt_path: a checkpoint saved after more training still names the step its C belongs to."""
    _, last = _fit(tmp_path / "a", tiny_module(), data, max_steps=3, val_check_interval=3)
    saved = torch.load(last, map_location="cpu", weights_only=True)["priorlab"]["calibration"]
    assert saved["step"] == 3
    resumed = tiny_module()
    trainer = tiny_trainer(tmp_path / "b", max_steps=5, limit_val_batches=0, inference_mode=False)
    trainer.fit(resumed, datamodule=data, ckpt_path=last)
    assert trainer.global_step == 5 and resumed._calibration == saved
    assert resumed.net.log_norm_const.item() == pytest.approx(saved["log_norm_const"], rel=1e-6)
    with pytest.warns(UserWarning, match="validation at step 3"):
        trainer.save_checkpoint(tmp_path / "end.ckpt")
