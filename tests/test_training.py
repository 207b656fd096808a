from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy

from priorlab.lightning_modules import EMA, DenoiseFigure, DenoiserModule
from priorlab.zoo import load_checkpoint
from tests.helpers import assert_ddp_matches_one_process, tiny_data, tiny_module, tiny_trainer


def _fit(tmp_path, module=None, data=None, **trainer_kw):
    module = module or tiny_module()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = tiny_trainer(tmp_path, callbacks=[ckpt, *trainer_kw.pop("callbacks", [])], **trainer_kw)
    trainer.fit(module, datamodule=data or tiny_data())
    return module, trainer, tmp_path / "ckpt" / "last.ckpt"


@pytest.mark.parametrize("channels,arch", [(1, "test_bf_dncnn"), (3, "test_bf_unet")])
def test_fit_checkpoint_load_round_trip(tmp_path, channels, arch):
    module, trainer, last = _fit(tmp_path, tiny_module(channels, arch), tiny_data(channels))
    assert trainer.global_step == 2
    net = load_checkpoint(last)
    assert not net.training
    assert net.prior_config["kind"] == "denoiser" and net.prior_config["channels"] == channels
    assert net.arch_config == module.net.arch_config
    y = torch.rand(1, channels, 24, 24)
    torch.testing.assert_close(net(y), module.net.eval()(y))


def test_validation_logs_psnr_per_sigma_and_mean(tmp_path):
    module, trainer, _ = _fit(tmp_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for key in ("val/psnr_25", "val/psnr_50", "val/psnr", "val/loss"):
        assert key in metrics, key
    assert metrics["val/psnr"] == pytest.approx((metrics["val/psnr_25"] + metrics["val/psnr_50"]) / 2, rel=1e-5)
    assert metrics["val/psnr_25"] > metrics["val/psnr_50"]  # less noise, higher PSNR, even untrained-ish


def test_validation_psnr_is_the_mean_of_per_image_psnrs(tmp_path):
    from priorlab.lightning_modules.denoiser import _images, validation_noise

    m, dm = tiny_module(), tiny_data()  # validation at sigma 25 (index 0) and 50, on 2 images (limit_val_batches)
    logged = tiny_trainer(tmp_path).validate(m, datamodule=dm, verbose=False)[0]["val/psnr_25"]
    m.eval()
    psnrs = []
    for i, batch in zip(range(2), dm.val_dataloader()):
        x = _images(batch)
        assert x.shape[0] == 1  # one image per validation step
        with torch.no_grad():
            x_hat = m(x + validation_noise(x, 25 / 255, index=i, sigma_index=0)).clamp(0, 1)
        psnrs.append(-10 * torch.log10((x_hat - x).pow(2).mean()).item())
    assert len(psnrs) > 1 and max(psnrs) - min(psnrs) > 0.1  # the images differ, so pooling would differ
    assert logged == pytest.approx(sum(psnrs) / len(psnrs), abs=1e-4)


def test_validation_noise_is_fixed_across_runs(tmp_path):
    m = tiny_module()
    trainer = tiny_trainer(tmp_path)
    first = trainer.validate(m, datamodule=tiny_data(), verbose=False)[0]
    again = trainer.validate(m, datamodule=tiny_data(), verbose=False)[0]
    assert first == again


def test_bf16_mixed_fit_runs(tmp_path):
    module, trainer, last = _fit(tmp_path, precision="bf16-mixed")
    assert torch.isfinite(torch.tensor(trainer.callback_metrics["train/loss"]))
    assert all(p.dtype == torch.float32 for p in load_checkpoint(last).parameters())


def test_ema_weights_are_what_the_checkpoint_holds(tmp_path):
    module, trainer, last = _fit(tmp_path, max_steps=5, callbacks=[EMA(decay=0.5)])
    ckpt = torch.load(last, weights_only=True)
    assert "current_model_state" in ckpt  # raw weights kept apart by Lightning's EMA callback
    ema = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    raw = {k: v for k, v in ckpt["current_model_state"].items() if k.startswith("net.")}
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)
    net = load_checkpoint(last)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, ema["net." + k])


def test_training_reduces_the_loss(tmp_path):
    torch.manual_seed(0)
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    module = tiny_module(lr=3e-3, sigma_range_255=(20.0, 40.0))
    _fit(tmp_path, module, tiny_data(patches_per_epoch=400), max_steps=50, limit_val_batches=0,
         callbacks=[Record()])
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)


def test_noise_weighted_loss_divides_each_mse_by_the_noise_variance():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 16, 16)
    sig = torch.tensor([5.0, 50.0]) / 255
    y = x + sig.view(-1, 1, 1, 1) * torch.randn_like(x)
    values = {}
    for weighting in ("none", "noise"):
        torch.manual_seed(1)
        m = tiny_module(loss_weighting=weighting)
        m.corrupt = lambda _x: (y, sig)
        m.log = lambda *a, **k: None
        values[weighting] = m.training_step(x, 0)
        with torch.no_grad():
            mse = (m(y) - x).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(values["none"], mse.mean())
    expected = (mse / (sig**2 + (1 / 255) ** 2)).mean() * (25 / 255) ** 2
    torch.testing.assert_close(values["noise"], expected)
    assert values["noise"].requires_grad
    with pytest.raises(ValueError):
        DenoiserModule(arch="test_bf_dncnn", loss_weighting="snr")


def test_init_from_fine_tunes_from_a_checkpoint(tmp_path):
    module, _, last = _fit(tmp_path)
    tuned = tiny_module(init_from=str(last))
    for k, v in tuned.net.state_dict().items():
        torch.testing.assert_close(v, module.net.state_dict()[k])
    with pytest.raises(ValueError, match="arch"):
        tiny_module(channels=3, init_from=str(last))


def test_static_graph_is_refused(tmp_path):
    trainer = tiny_trainer(tmp_path, strategy=DDPStrategy(static_graph=True), devices=1)
    with pytest.raises(ValueError, match="static_graph"):
        trainer.fit(tiny_module(), datamodule=tiny_data())


def test_bad_noise_range_is_refused():
    with pytest.raises(ValueError, match="sigma_range_255"):
        DenoiserModule(arch="test_bf_dncnn", sigma_range_255=(50.0, 10.0))


def test_denoise_figure_written_at_fit_end(tmp_path):
    fig_cb = DenoiseFigure(sigma_255=25.0, max_images=2, crop=32)
    _fit(tmp_path, callbacks=[fig_cb])
    assert fig_cb.last_path is not None and fig_cb.last_path.is_file()
    assert fig_cb.last_path.name == "denoised_sigma25.png"
    assert fig_cb.last_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig_cb.last_psnr is not None and fig_cb.last_psnr > 0


def test_denoise_figure_during_training_uses_the_validation_weights(tmp_path):
    # EMA listed first (as in every config): it swaps the raw weights back at the end of validation, so a figure
    # drawn then showed the raw weights while val/psnr was measured with the average.
    seen: dict[str, list[torch.Tensor]] = {"validation": [], "figure": []}

    class Spy(DenoiserModule):
        def validation_step(self, batch, batch_idx):
            seen["validation"].append(next(self.net.parameters()).detach().clone())
            return super().validation_step(batch, batch_idx)

    class SpyFigure(DenoiseFigure):
        def _panels(self, trainer, pl_module):
            seen["figure"].append(next(pl_module.net.parameters()).detach().clone())
            return super()._panels(trainer, pl_module)

    module = Spy(arch="test_bf_dncnn", val_sigmas_255=(25.0,))
    _fit(tmp_path, module, max_steps=4, limit_val_batches=1, num_sanity_val_steps=0,
         callbacks=[EMA(decay=0.5), SpyFigure(max_images=1, crop=16)])
    assert len(seen["figure"]) >= 2  # during training, and at fit end
    assert torch.equal(seen["figure"][0], seen["validation"][0])  # the averaged weights, like val/psnr


# ---- DDP parity ------------------------------------------------------------------------------------
class FixedNoiseModule(DenoiserModule):
    """Noise as a fixed function of the image, so one and two processes see the same noisy batch."""

    def __init__(self, grad_dir: str = "", **kw):
        super().__init__(**kw)
        self.grad_dir = grad_dir

    def corrupt(self, x):
        sigma = torch.full((x.shape[0],), 0.2)
        return x + 0.2 * torch.sin(1000.0 * x + 1.0), sigma

    def on_after_backward(self):
        if self.global_step == 0:
            grads = {n: p.grad.detach().clone() for n, p in self.net.named_parameters()}
            torch.save(grads, Path(self.grad_dir) / f"grads_{self.trainer.world_size}_{self.global_rank}.pt")


class FixedImages(pl.LightningDataModule):
    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(8, 1, 12, 12, generator=g)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(list(self.images), batch_size=self.batch_size, shuffle=False)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_on_the_full_batch(tmp_path, monkeypatch):
    common = dict(arch="test_bf_dncnn", grad_dir=str(tmp_path), val_sigmas_255=(25.0,))
    assert_ddp_matches_one_process(tmp_path, monkeypatch, lambda: FixedNoiseModule(**common), FixedImages,
                                   sync_batchnorm=True)


def test_ema_network_denoises_early_in_training(tmp_path):
    """Averaged running statistics must not lag far behind (regression: eval-mode identity after EMA)."""
    torch.manual_seed(0)
    module = tiny_module(lr=3e-3, sigma_range_255=(20.0, 40.0))
    _, _, last = _fit(tmp_path, module, tiny_data(patches_per_epoch=320), max_steps=40, limit_val_batches=0,
                      callbacks=[EMA(decay=0.95)])
    ema_net = load_checkpoint(last)
    raw_net = load_checkpoint(last)
    raw = torch.load(last, weights_only=True)["current_model_state"]
    raw_net.load_state_dict({k[len("net."):]: v for k, v in raw.items() if k.startswith("net.")})
    held_out = tiny_data(patches_per_epoch=32, batch_size=32, seed=1)
    held_out.setup("fit")
    x = next(iter(held_out.train_dataloader()))
    y = x + (30 / 255) * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mse_ema, mse_raw = ((n(y) - x).pow(2).mean().item() for n in (ema_net, raw_net))
    mse_in = (y - x).pow(2).mean().item()
    assert mse_raw < 0.8 * mse_in, (mse_raw, mse_in)
    # Without the batch-norm warm start the averaged running variances lag so far behind that the
    # averaged network is close to the identity here (measured: 0.98 of the input MSE; 0.66 with it).
    assert mse_ema < 0.8 * mse_in, (mse_ema, mse_raw, mse_in)


def test_training_noise_differs_across_ranks_and_reproduces_per_rank():
    # seed_everything seeds every DDP rank alike; the training noise comes from a per-rank generator instead.
    from types import SimpleNamespace

    x = torch.rand(4, 1, 8, 8)

    def draw(rank: int, step: int = 0):
        torch.manual_seed(0)  # what seed_everything(0) does on every rank
        m = tiny_module()
        m._trainer = SimpleNamespace(global_rank=rank, global_step=step)
        y, sigma = m.corrupt(x)
        return y, sigma

    (y0, s0), (y0b, s0b), (y1, s1), (y2, _) = draw(0), draw(0), draw(1), draw(0, step=100)
    assert torch.equal(y0, y0b) and torch.equal(s0, s0b)  # reproducible for a seed and rank
    assert not torch.equal(s0, s1) and not torch.allclose(y0 - x, y1 - x)  # other ranks: other noise
    assert not torch.equal(y0, y2)  # a run resumed at step 100 does not replay step 0's noise


def test_biased_batchnorm_keeps_its_warm_start_when_converted_to_sync_batchnorm():
    # Trainer(sync_batchnorm=True) turns the biased net's BatchNorm2d into torch's SyncBatchNorm, whose forward
    # has no warm start; the module runs the first training batch with momentum 1 (the batch's statistics are
    # copied), then restores it. (SyncBatchNorm's forward needs a GPU once a process group exists, so the test
    # checks the momentum around the first batch rather than running it.)
    m = tiny_module(arch_args={"bias": True})  # the biased counterpart: ordinary batch norm
    m.net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(m.net)
    bns = [b for b in m.net.modules() if isinstance(b, torch.nn.SyncBatchNorm)]
    assert bns and all(int(b.num_batches_tracked) == 0 for b in bns)
    x = torch.rand(4, 1, 16, 16)
    m.on_train_batch_start(x, 0)
    assert all(b.momentum == 1.0 for b in bns)  # the first batch sets the running statistics
    for b in bns:
        b.num_batches_tracked += 1  # what the first forward does
    m.on_train_batch_end(None, x, 0)
    assert all(b.momentum == 0.1 for b in bns)
    m.on_train_batch_start(x, 1)  # later batches: the usual momentum
    assert all(b.momentum == 0.1 for b in bns)


def test_compile_mode_reaches_torch_compile(tmp_path, monkeypatch):
    module = tiny_module(compile=True, compile_mode="reduce-overhead")
    calls = []
    monkeypatch.setattr(module.net, "compile", lambda **kw: calls.append(kw))  # no real compilation on CI
    _fit(tmp_path, module)
    assert calls == [{"mode": "reduce-overhead"}]


def test_unknown_compile_mode_is_refused():
    with pytest.raises(ValueError, match="compile_mode"):
        DenoiserModule(arch="test_bf_dncnn", compile=True, compile_mode="fast")


def test_fused_adam_falls_back_off_cuda_and_takes_the_same_step():
    from priorlab.lightning_modules.denoiser import adam

    nets = [DenoiserModule(arch="test_bf_dncnn").net for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [adam(net, lr=1e-2, weight_decay=0.0, fused=fused) for net, fused in zip(nets, (False, True))]
    assert not opts[1].defaults["fused"]  # CPU parameters: PyTorch's default implementation
    x = torch.rand(2, 1, 12, 12)
    for net, opt in zip(nets, opts):
        net(x).square().mean().backward()
        opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b)


def test_channels_last_reaches_the_network_and_its_input(tmp_path):
    module, _, _ = _fit(tmp_path, tiny_module(channels_last=True))
    weights = [p for p in module.net.parameters() if p.ndim == 4]
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    seen = []
    module.net.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    module(torch.rand(2, 1, 12, 12))
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    plain, _, _ = _fit(tmp_path / "plain", tiny_module())
    assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in plain.net.parameters() if p.ndim == 4)
