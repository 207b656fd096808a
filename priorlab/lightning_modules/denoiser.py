"""DenoiserModule: blind training of a denoiser (score model) from the zoo (algorithms.md §2.6)."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio

from priorlab.core.errors import ConfigError
from priorlab.core.losses import denoising_loss, noise_normalized_weight
from priorlab.core.noise import SigmaSchedule, add_noise, sample_sigmas, sigma_from_255
from priorlab.zoo import create_model, set_sync_batchnorm
from priorlab.zoo.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_KEY
from priorlab.zoo.priors import init_from as init_weights_from


def refuse_static_graph(trainer: pl.Trainer) -> None:
    """DDP's ``static_graph=True`` silently corrupts gradients of input-gradient losses (ecosystem.md §6.3)."""
    ddp_kwargs = getattr(trainer.strategy, "_ddp_kwargs", None) or {}
    if ddp_kwargs.get("static_graph"):
        raise ConfigError("DDPStrategy(static_graph=True) is not supported by priorlab: it gives silently "
                         "wrong gradients with input-gradient losses. Use strategy: ddp without static_graph.")


def _log_this_step(trainer: pl.Trainer) -> bool:
    """Whether Lightning writes the logged step values to the loggers after the current training step, or the
    step ends an epoch or the run (so that ``callback_metrics`` hold the last value for checkpoint callbacks)."""
    if trainer.fast_dev_run or trainer.is_last_batch:
        return True
    if trainer.max_steps > 0 and trainer.global_step + 1 >= trainer.max_steps:
        return True
    connector = getattr(trainer, "_logger_connector", None)  # Lightning's own test (LearningRateMonitor uses it)
    try:
        return bool(connector.should_update_logs)
    except (AttributeError, NotImplementedError):  # another Lightning version or no active loop: log every step
        return True


# Validation PSNR: the mean over images of each image's PSNR (algorithms.md §2.7, as benchmarks/denoise_quality.py),
# not torchmetrics' default, the PSNR of the MSE pooled over all pixels of all images (large images weigh more).
PSNR_PER_IMAGE = dict(data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean")


def training_noise_generator(module: pl.LightningModule, device: torch.device) -> torch.Generator | None:
    """The generator of a module's training noise: one per process, seeded from the run's seed, the rank and
    the step at which training (re)started, so that DDP ranks draw different noise levels and noise (the
    global RNG is seeded alike on every rank by ``seed_everything``) and a resumed run does not replay the
    noise of its first steps. None outside a Trainer (the global RNG is used then)."""
    trainer = module._trainer
    if trainer is None:
        return None
    gen = getattr(module, "_noise_generator", None)
    if gen is None or gen.device != device:
        seed = training_noise_seed(torch.initial_seed(), trainer.global_rank, trainer.global_step)
        gen = torch.Generator(device=device).manual_seed(seed)
        module._noise_generator = gen
    return gen


CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


def adam(net: nn.Module, *, lr: float, weight_decay: float, fused: bool) -> torch.optim.Adam:
    """Adam over the network's parameters; fused (one kernel) when asked and every parameter is on CUDA."""
    params = list(net.parameters())
    fused = fused and all(p.is_cuda for p in params)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def training_noise_seed(base_seed: int, rank: int, step: int) -> int:
    """Seed of the training-noise generator of process ``rank`` starting at ``step`` (63 bits, well mixed)."""
    import numpy as np

    return int(np.random.SeedSequence([base_seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)


def log_train_step(module: pl.LightningModule, values: dict[str, torch.Tensor], *, batch_size: int) -> None:
    """Log per-step training values on the steps whose values are written, without a host-device sync.

    Lightning writes step values to the loggers every ``log_every_n_steps`` steps, and only the value logged at
    that step. ``self.log`` on the steps in between writes nothing but costs host time (about 0.6 ms per step on
    a 2-core Xeon, a third of Lightning's overhead over a plain loop: it moves its whole result collection to the
    value's device on every call), so the values are logged only on the written steps and on the last step of
    each epoch and of the run (``trainer.callback_metrics["train/loss"]`` is the value of the last of those
    steps, and is there for checkpoint callbacks at every epoch end). They go to the logger as tensors,
    converted only when written. Values logged with ``prog_bar=True`` would instead be converted to Python
    numbers after *every* batch, even on steps that did not log them (an ``.item()`` that waits for the GPU and
    drains its queue of kernels; docs/benchmarks.md). So the progress bar gets Python floats, converted here on
    the logged steps under the last part of the name (``train/loss`` shows as ``loss``), and nothing is
    converted without a progress bar.
    """
    trainer = module._trainer
    if trainer is not None and not _log_this_step(trainer):
        return
    module.log_dict(values, on_step=True, on_epoch=False, batch_size=batch_size)
    if trainer is None or trainer.progress_bar_callback is None:
        return
    trainer.progress_bar_metrics.update({k.rsplit("/", 1)[-1]: v.item() for k, v in values.items()})


def validation_noise(x: torch.Tensor, sigma: float, *, index: int, sigma_index: int) -> torch.Tensor:
    """Noise σ·z for validation image ``index``, fixed across epochs and devices (seeded on the CPU)."""
    g = torch.Generator().manual_seed(1_000_003 * index + sigma_index)
    z = torch.randn(x.shape, generator=g, dtype=torch.float32)
    return (sigma * z).to(device=x.device, dtype=x.dtype)


class DenoiserModule(pl.LightningModule):
    """Blind training of a denoiser: one σ per image, loss on the denoised output.

    The network is built through the zoo from plain arguments, so the hyper-parameters are plain
    JSON. Validation denoises full images at fixed noise levels with noise that is the same at every
    epoch, and logs PSNR per level (``val/psnr_25`` …) and their mean (``val/psnr``).

    Args:
        arch: registry name of the network (see ``priorlab.zoo.list_models()``).
        arch_args: extra constructor arguments of the network (e.g. ``{"depth": 17}``).
        in_chans: image channels (1 gray, 3 color); the CLI links it to the datamodule's.
        sigma_range_255: training noise range [min, max] on the 0-255 scale (default [0, 100]).
        sigma_schedule: how σ is drawn in that range: ``uniform``, ``log_uniform`` or ``quadratic``.
        val_sigmas_255: noise levels (0-255 scale) of the validation PSNRs.
        lr: Adam learning rate.
        milestones: epochs at which the learning rate is multiplied by ``lr_gamma`` (MultiStepLR).
        lr_gamma: learning-rate factor at each milestone.
        weight_decay: Adam weight decay.
        loss_weighting: ``none`` (the reference MSE) or ``noise``: each image's MSE divided by
            σ² + (1/255)² (:func:`priorlab.core.losses.noise_normalized_weight`), so that low noise levels
            are not drowned out in short trainings. ``train/mse`` logs the plain MSE either way. It is a
            trade-off, not a free gain: fine-tuning ``bf-dncnn-small-gray`` for 256 steps (CPU,
            2026-11-26) gave +1.3 dB at σ₂₅₅ = 5 but −3.2 dB at 25 and −2.4 dB at 50 on Set12 crops,
            against the same fine-tune with ``none``.
        compile: compile the network in place with ``torch.compile`` (state-dict keys unchanged).
        compile_mode: ``torch.compile``'s mode when ``compile`` is on: None (its default), ``reduce-overhead``
            (CUDA graphs: the host launches a whole forward or backward at once; for short GPU steps whose
            time the host's kernel launches would otherwise set, docs/benchmarks.md), ``max-autotune`` or
            ``max-autotune-no-cudagraphs``.
        fused_adam: Adam's fused implementation (one kernel for all parameters) when every parameter is
            on a CUDA device; ``False`` keeps PyTorch's default (``foreach``).
        channels_last: run the network in channels-last memory format (faster convolutions on GPU).
        init_from: fine-tune from this prior: a catalog name, ``hf-hub:ORG/REPO[@REV]``, ``local-dir:PATH``
            or a priorlab checkpoint (``.ckpt``); the architecture must match.
    """

    def __init__(
        self,
        arch: str = "bf_dncnn",
        arch_args: dict[str, Any] | None = None,
        in_chans: int = 1,
        sigma_range_255: tuple[float, float] = (0.0, 100.0),
        sigma_schedule: SigmaSchedule = "uniform",
        val_sigmas_255: Sequence[float] = (5.0, 15.0, 25.0, 50.0, 75.0, 100.0),
        lr: float = 1e-3,
        milestones: Sequence[int] = (),
        lr_gamma: float = 0.5,
        weight_decay: float = 0.0,
        loss_weighting: Literal["none", "noise"] = "none",
        compile: bool = False,
        compile_mode: CompileMode | None = None,
        fused_adam: bool = False,
        channels_last: bool = False,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        lo, hi = sigma_range_255
        if not 0 <= lo <= hi:
            raise ValueError(f"sigma_range_255 must satisfy 0 <= min <= max, got {sigma_range_255}")
        if loss_weighting not in ("none", "noise"):
            raise ValueError(f"loss_weighting must be 'none' or 'noise', got {loss_weighting!r}")
        if compile_mode not in (None, *typing.get_args(CompileMode)):
            raise ValueError(f"compile_mode must be one of {list(typing.get_args(CompileMode))} or None, "
                             f"got {compile_mode!r}")
        if sigma_schedule == "log_uniform" and lo <= 0:
            raise ValueError(f"sigma_schedule log_uniform needs a noise range above 0, got sigma_range_255 "
                             f"{list(sigma_range_255)}: e.g. [1.0, {hi:g}]")
        self.save_hyperparameters()
        self.net: nn.Module = create_model(arch, in_chans=in_chans, **(arch_args or {}))
        if init_from:
            init_weights_from(self.net, init_from)
        self.sigma_min, self.sigma_max = sigma_from_255(lo), sigma_from_255(hi)
        self.val_sigmas_255 = [float(s) for s in val_sigmas_255]
        self.val_psnr = nn.ModuleList(PeakSignalNoiseRatio(**PSNR_PER_IMAGE) for _ in self.val_sigmas_255)
        self.test_psnr = nn.ModuleList(PeakSignalNoiseRatio(**PSNR_PER_IMAGE) for _ in self.val_sigmas_255)
        self.val_loss = MeanMetric()

    # ---- the Denoiser contract -------------------------------------------------------------------
    def forward(self, y: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """Denoised estimate x̂(y) for y of shape (B, C, H, W) (blind: ``sigma`` is ignored)."""
        if self.hparams.channels_last:
            y = y.contiguous(memory_format=torch.channels_last)
        return self.net(y)

    def corrupt(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Noisy training input y = x + σz with one σ per image drawn from the training range."""
        g = training_noise_generator(self, x.device)
        sigma = sample_sigmas(x.shape[0], self.sigma_min, self.sigma_max,
                              schedule=self.hparams.sigma_schedule, device=x.device, generator=g)
        y, _ = add_noise(x, sigma, generator=g)
        return y, sigma

    # ---- Lightning hooks -------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        refuse_static_graph(self.trainer)
        # Trainer(sync_batchnorm=True) converts torch BatchNorm layers; do the same for bias-free ones.
        if getattr(self.trainer.strategy, "_layer_sync", None) is not None:
            set_sync_batchnorm(self.net, True)
        # Here rather than in configure_model: weight-averaging callbacks refuse models that define it.
        if self.hparams.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.net.compile(mode=self.hparams.compile_mode)  # in place: the state dict keeps its keys
            self._compiled = True

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Trainer(sync_batchnorm=True) replaces the biased counterpart's BatchNorm2d (whose forward copies the
        # first batch's statistics) by a plain SyncBatchNorm: give those the same warm start, once.
        if getattr(self, "_sync_bn_first_batch", None) is None:
            first = [m for m in self.net.modules()
                     if isinstance(m, nn.SyncBatchNorm) and int(m.num_batches_tracked) == 0]
            for m in first:
                m._priorlab_momentum, m.momentum = m.momentum, 1.0
            self._sync_bn_first_batch = first

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        for m in getattr(self, "_sync_bn_first_batch", None) or []:
            m.momentum = m._priorlab_momentum
        self._sync_bn_first_batch = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        x = _images(batch)
        y, sigma = self.corrupt(x)
        mse = denoising_loss(self(y), x)
        if self.hparams.loss_weighting == "noise":
            # Times (25/255)²: the value reads as an MSE at σ₂₅₅ = 25 (readable logs); Adam ignores the scale.
            loss = (mse * noise_normalized_weight(sigma) * (25.0 / 255.0) ** 2).mean()
            log_train_step(self, {"train/loss": loss.detach(), "train/mse": mse.mean().detach()},
                           batch_size=x.shape[0])
        else:
            loss = mse.mean()
            log_train_step(self, {"train/loss": loss.detach()}, batch_size=x.shape[0])
        return loss

    def _eval_step(self, batch: torch.Tensor, batch_idx: int, metrics: nn.ModuleList, prefix: str) -> None:
        x = _images(batch)
        # Global image index under DistributedSampler(shuffle=False): rank r sees images r, r+W, r+2W…
        index = batch_idx * self.trainer.world_size + self.trainer.global_rank if self._trainer else batch_idx
        for k, (s255, metric) in enumerate(zip(self.val_sigmas_255, metrics)):
            y = x + validation_noise(x, sigma_from_255(s255), index=index, sigma_index=k)
            x_hat = self(y).float()
            if k == 0 and prefix == "val":
                self.val_loss.update(denoising_loss(x_hat, x).mean())
            # Protocol of the 2020 paper: output clipped to [0, 1] before PSNR; noisy input not clipped.
            metric.update(x_hat.clamp(0, 1), x.float())
        for s255, metric in zip(self.val_sigmas_255, metrics):
            self.log(f"{prefix}/psnr_{s255:g}", metric, on_step=False, on_epoch=True, batch_size=1)

    def on_validation_epoch_end(self) -> None:
        self._log_mean_psnr(self.val_psnr, "val")
        self.log("val/loss", self.val_loss, batch_size=1)

    def on_test_epoch_end(self) -> None:
        self._log_mean_psnr(self.test_psnr, "test")

    def _log_mean_psnr(self, metrics: nn.ModuleList, prefix: str) -> None:
        # The mean of per-level PSNRs (each averaged over images) is the model-selection score.
        values = [m.compute() for m in metrics]
        if values:
            self.log(f"{prefix}/psnr", torch.stack(values).mean(), prog_bar=True, sync_dist=False)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, self.val_psnr, "val")

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, self.test_psnr, "test")

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """Blind denoising of the predict images (taken as already noisy)."""
        return self(_images(batch)).clamp(0, 1)

    def configure_optimizers(self) -> Any:
        opt = adam(self.net, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
                   fused=self.hparams.fused_adam)
        if not self.hparams.milestones:
            return opt
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(self.hparams.milestones),
                                                     gamma=self.hparams.lr_gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What zoo.load_checkpoint needs to rebuild the network without this class.
        checkpoint[CHECKPOINT_KEY] = {
            "format_version": CHECKPOINT_FORMAT,
            "kind": "denoiser",
            "arch_config": self.net.arch_config,
            "state_prefix": "net.",
            "channels": self.hparams.in_chans,
            "image_range": [0.0, 1.0],
            "sigma_range_255": list(self.hparams.sigma_range_255),
            "sigma_schedule": self.hparams.sigma_schedule,
            "blind": True,
        }


def _images(batch: Any) -> torch.Tensor:
    """Clean images from a batch: a tensor, or the first element of a tuple/list, or ``batch["image"]``."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict) and isinstance(batch.get("image"), torch.Tensor):
        return batch["image"]
    raise TypeError(f"expected a batch of images (tensor, (images, ...) or {{'image': ...}}), got {type(batch)}")
