"""DualScoreModule: normalized energy models trained by dual score matching (algorithms.md §7).

Each image gets its own noise variance t (log10 t ~ U[−9, 3] by default, §7.3) and fresh noise; the
energy network gives ∇_y U and ∂_t U by autograd with ``create_graph=True`` and the loss is the batch
mean of ℓ_DSM + λ·ℓ_TSM (a double backward). Validation logs both terms, denoising PSNR at fixed input
PSNRs, and the NLL in bits/dim after fixing the normalization constant C on the validation images at
t_max (§7.4); C and the validation images' shape (C, H, W) are written into the network's ``log_norm_const``
and ``log_norm_shape`` buffers and into checkpoints, so a checkpoint loaded with ``priorlab.zoo.load`` answers
``log_prob`` directly, for images of that shape (C depends on d = C·H·W).

Requirements (ecosystem.md §6): ``Trainer(inference_mode=False)`` (scores by autograd during
evaluation); DDP without ``static_graph``; bf16-mixed rather than 16-mixed; no ``torch.compile``
(it cannot compile double backward).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio

from priorlab.core.energy import DEFAULT_T_MAX, check_quantized, full_precision, log_norm_const_from_energies
from priorlab.core.likelihood import bits_per_dim
from priorlab.core.losses import dsm_loss, tsm_loss
from priorlab.lightning_modules.denoiser import (
    PSNR_PER_IMAGE,
    _images,
    log_train_step,
    refuse_static_graph,
    training_noise_generator,
    validation_noise,
)
from priorlab.zoo import create_model
from priorlab.zoo.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_KEY
from priorlab.zoo.priors import init_from as init_weights_from
from priorlab.zoo.registry import get_spec


def sample_variances(batch: int, log10_t_range: tuple[float, float], *, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """One noise variance per image, log10 t ~ U[lo, hi] (``UniformLog``, algorithms.md §7.3); (B,) float32."""
    lo, hi = log10_t_range
    u = torch.rand(batch, generator=generator, device=device)
    return torch.pow(10.0, lo + (hi - lo) * u)


class DualScoreModule(pl.LightningModule):
    """Dual score matching of an energy network from the zoo (family ``energy``).

    Args:
        arch: registry name of the energy network (``energy_unet``, ``energy_unet_small``, ``test_energy_unet``).
        arch_args: extra constructor arguments of the network.
        in_chans: image channels; the CLI links it to the datamodule's.
        log10_t_range: training range of log10 t (t = σ², [0, 1]² units); [−9, 3] is PSNR_in 90 to −30 dB.
        tsm_weight: λ, the weight of the time-score term (1 in the paper).
        val_psnr_in: input PSNRs (dB, peak 1; t = 10^(−PSNR/10)) of the validation denoising PSNRs.
        t_max: noise variance of the Gaussian limit that fixes C (1e3).
        nll_levels: quantization levels of the data for bits/dim (256: 8-bit images, +8 bits/dim, and the
            validation images must be 8-bit); ``None`` for continuous data (e.g. Gaussian fields).
        lr: Adam learning rate (5e-4 in the paper).
        lr_halving_steps: halve the learning rate every this many optimizer steps (100k in the paper);
            ``None`` keeps it constant.
        weight_decay: Adam weight decay.
        compile: refused: ``torch.compile`` cannot compile the double-backward path (ecosystem.md §6.5).
        init_from: fine-tune from this prior (name, ``hf-hub:``, ``local-dir:`` or ``.ckpt``); the architecture
            must match.
    """

    def __init__(
        self,
        arch: str = "energy_unet",
        arch_args: dict[str, Any] | None = None,
        in_chans: int = 3,
        log10_t_range: tuple[float, float] = (-9.0, 3.0),
        tsm_weight: float = 1.0,
        val_psnr_in: Sequence[float] = (30.0, 20.0, 10.0, 0.0),
        t_max: float = DEFAULT_T_MAX,
        nll_levels: int | None = 256,
        lr: float = 5e-4,
        lr_halving_steps: int | None = None,
        weight_decay: float = 0.0,
        compile: bool = False,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        lo, hi = log10_t_range
        if not lo < hi:
            raise ValueError(f"log10_t_range must satisfy min < max, got {log10_t_range}")
        if tsm_weight < 0 or t_max <= 0:
            raise ValueError(f"need tsm_weight >= 0 and t_max > 0, got {tsm_weight}, {t_max}")
        if compile:
            raise ValueError("compile=True is not supported for energy models: torch.compile cannot compile the "
                             "double backward of dual score matching (ecosystem.md §6.5). Train eagerly; compile "
                             "a denoiser (DenoiserModule) or the sampling path instead.")
        self.save_hyperparameters()
        net_args = dict(arch_args or {})
        if "min_variance" in get_spec(arch).init_args() and "min_variance" not in net_args:
            # Clean images (t = 0) are then embedded at the smallest trained variance, never outside the range.
            net_args["min_variance"] = 10.0**lo
        self.net: nn.Module = create_model(arch, in_chans=in_chans, **net_args)
        if not hasattr(self.net, "scores"):
            raise ValueError(f"{arch!r} is not an energy model (family 'energy'); see "
                             "priorlab.zoo.list_models(family='energy')")
        if init_from:
            init_weights_from(self.net, init_from)
        self.val_psnr_in = [float(p) for p in val_psnr_in]
        self.metrics = nn.ModuleDict({
            stage: nn.ModuleDict({
                "psnr": nn.ModuleList(PeakSignalNoiseRatio(**PSNR_PER_IMAGE) for _ in self.val_psnr_in),
                **{k: MeanMetric().set_dtype(torch.float64) for k in ("dsm", "tsm", "u0", "u_max", "u_max_sq")},
            }) for stage in ("val", "test")
        })
        self._dims: int | None = None
        self._shape: tuple[int, int, int] | None = None  # (C, H, W) of this evaluation epoch's images
        self._calibration: dict[str, Any] | None = None  # last validation's C (for the validated weights)

    # ---- the Denoiser / EnergyModel contracts ----------------------------------------------------
    def forward(self, y: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """Denoised estimate y − σ²∇_y U(y, σ²); σ is required."""
        return self.net(y, sigma)

    # ---- Lightning hooks -------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        refuse_static_graph(self.trainer)
        loops = (self.trainer.validate_loop, self.trainer.test_loop, self.trainer.predict_loop)
        if any(getattr(loop, "inference_mode", False) for loop in loops):
            raise ValueError("DualScoreModule evaluates scores by autograd, which torch.inference_mode forbids: "
                             "create the Trainer with inference_mode=False (YAML: `trainer.inference_mode: false`, "
                             "CLI: --trainer.inference_mode=false)")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = _images(batch)
        y, t = self.corrupt(x)
        dsm, tsm = self._loss_terms(x, y, t, create_graph=True)
        loss = (dsm + self.hparams.tsm_weight * tsm).mean()
        log_train_step(self, {"train/loss": loss.detach(), "train/dsm": dsm.mean().detach(),
                              "train/tsm": tsm.mean().detach()}, batch_size=x.shape[0])
        return loss

    def corrupt(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Noisy training input y = x + √t·z, one variance t per image (log-uniform); returns (y, t)."""
        g = training_noise_generator(self, x.device)
        t = sample_variances(x.shape[0], self.hparams.log10_t_range, device=x.device, generator=g)
        z = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        return x + t.sqrt().view(-1, 1, 1, 1).to(x.dtype) * z, t

    def _loss_terms(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, *, create_graph: bool,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ℓ_DSM, ℓ_TSM) per image (algorithms.md §7.3)."""
        _, grad_y, grad_t = self.net.scores(y, t, create_graph=create_graph)
        denoised = y - t.view(-1, 1, 1, 1) * grad_y  # D = y − t∇_y U (§7.1)
        # t comes from sample_variances (> 0 by construction): skip the check, a host sync per call on a GPU.
        return dsm_loss(denoised, x, t, check=False), tsm_loss(grad_t, y, x, t, check=False)

    def _eval_step(self, batch: Any, batch_idx: int, stage: str) -> None:
        if torch.is_inference_mode_enabled():
            raise RuntimeError("scores need autograd: run the Trainer with inference_mode=False")
        x = _images(batch)
        if not torch.isfinite(x).all():
            raise ValueError(f"{stage} images contain NaN or infinite values")
        if self.hparams.nll_levels is not None:
            check_quantized(x, self.hparams.nll_levels, name=f"{stage} images")
        m = self.metrics[stage]
        shape = tuple(x.shape[1:])
        if self._shape is not None and shape != self._shape:
            raise ValueError(f"{stage} images must all have one shape: C is calibrated for one dimension d = C·H·W, "
                             f"but batches of {self._shape} and {shape} (C, H, W) came; crop or resize them to one "
                             "size")
        self._shape, self._dims = shape, x[0].numel()
        # Global image index under DistributedSampler(shuffle=False): noise fixed across epochs and devices.
        index = batch_idx * self.trainer.world_size + self.trainer.global_rank if self._trainer else batch_idx
        with full_precision():
            x = x.float()
            for k, (psnr_in, metric) in enumerate(zip(self.val_psnr_in, m["psnr"])):
                sigma = 10.0 ** (-psnr_in / 20.0)
                y = x + validation_noise(x, sigma, index=index, sigma_index=k)
                metric.update(self.net(y, sigma).clamp(0, 1), x)
            g = torch.Generator().manual_seed(1_000_003 * index + 999)
            t = sample_variances(x.shape[0], self.hparams.log10_t_range, generator=g).to(x.device)
            y = x + t.sqrt().view(-1, 1, 1, 1) * torch.randn(x.shape, generator=g).to(x.device)
            dsm, tsm = self._loss_terms(x, y, t, create_graph=False)
            m["dsm"].update(dsm)
            m["tsm"].update(tsm)
            with torch.no_grad():
                m["u0"].update(self.net.energy(x, 0.0))  # U(x, 0) of clean images (§7.4)
                y_max = x + validation_noise(x, math.sqrt(self.hparams.t_max), index=index, sigma_index=998)
                u_max = self.net.energy(y_max, self.hparams.t_max).double()
                m["u_max"].update(u_max)
                m["u_max_sq"].update(u_max.square())

    def _eval_epoch_end(self, stage: str) -> dict[str, float] | None:
        m = self.metrics[stage]
        shape, self._shape = self._shape, None  # the next epoch may bring another size (e.g. test after val)
        if self._dims is None or m["u0"].update_count == 0:
            return None
        # Metric values are already reduced over processes by torchmetrics: log them as plain floats.
        values = [float(p.compute()) for p in m["psnr"]]
        logs = {f"{stage}/psnr_in{psnr_in:g}": v for psnr_in, v in zip(self.val_psnr_in, values)}
        logs[f"{stage}/psnr"] = sum(values) / len(values)
        dsm, tsm = float(m["dsm"].compute()), float(m["tsm"].compute())
        logs.update({f"{stage}/dsm": dsm, f"{stage}/tsm": tsm, f"{stage}/loss": dsm + self.hparams.tsm_weight * tsm})
        # C = (d/2)·ln(2πe·t_max) − E_y[U(y, t_max)]; NLL = E_x[U(x, 0)] + C (§7.4).
        mean_u = m["u_max"].compute()
        c, _ = log_norm_const_from_energies(mean_u.view(1), self._dims, self.hparams.t_max)
        nll = m["u0"].compute().double() + c
        bpd = float(bits_per_dim(nll, self._dims, levels=self.hparams.nll_levels))
        var_u = float((m["u_max_sq"].compute() - mean_u.square()).clamp_min(0))
        logs.update({f"{stage}/log_norm_const": c, f"{stage}/energy_std_t_max": var_u**0.5})
        self.log_dict(logs, sync_dist=False)
        self.log(f"{stage}/bpd", bpd, prog_bar=True, sync_dist=False)
        for metric in (*m["psnr"], *(m[k] for k in ("dsm", "tsm", "u0", "u_max", "u_max_sq"))):
            metric.reset()
        return {"log_norm_const": c, "bpd": bpd, "dims": self._dims, "shape": shape}

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        result = self._eval_epoch_end("val")
        if result is None or self.trainer.sanity_checking:
            return
        # C belongs to the validated weights (the EMA average when a weight-averaging callback swapped it in).
        self._calibration = {"log_norm_const": result["log_norm_const"], "t_max": float(self.hparams.t_max),
                             "split": "validation", "step": int(self.global_step), "bpd": result["bpd"],
                             "nll_levels": self.hparams.nll_levels, "shape": list(result["shape"])}
        self.net.log_norm_const.fill_(result["log_norm_const"])
        self.net.calibration_shape = result["shape"]

    def on_test_epoch_end(self) -> None:
        # The paper's protocol calibrates on the test images themselves; the stored C is left untouched.
        self._eval_epoch_end("test")

    def on_train_end(self) -> None:
        # Runs after the weight-averaging callback copied the average (and its buffers) into the network.
        if self._calibration is not None:
            self.net.log_norm_const.fill_(self._calibration["log_norm_const"])
            self.net.calibration_shape = self._calibration["shape"]

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """log p(x) in nats per image of the predict batch (needs a calibrated network)."""
        return self.net.log_prob(_images(batch))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if not self.hparams.lr_halving_steps:
            return opt
        # lr = lr₀ / 2^⌊step / halving⌋ (algorithms.md §7.6).
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=int(self.hparams.lr_halving_steps), gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Resuming (fit --ckpt_path): the last validation's record comes back with the weights, so a checkpoint
        # saved later still says which step its C belongs to (and warns when training went on after it).
        meta = checkpoint.get(CHECKPOINT_KEY) or {}
        if meta.get("calibration"):
            self._calibration = dict(meta["calibration"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Runs after the callbacks' hooks: the EMA callback has already put its average into state_dict,
        # whose averaged C buffer is meaningless (and its shape buffer a copy of the live network's); the last
        # validation's C and image shape (computed for those weights) replace them.
        lo, hi = self.hparams.log10_t_range
        if self._calibration is not None and "state_dict" in checkpoint:
            checkpoint["state_dict"]["net.log_norm_const"] = torch.tensor(self._calibration["log_norm_const"],
                                                                          dtype=torch.float64)
            checkpoint["state_dict"]["net.log_norm_shape"] = torch.tensor(self._calibration["shape"], dtype=torch.int64)
        if self._calibration is not None and self._calibration["step"] != self.global_step:
            rank_zero_warn(f"saving a checkpoint at step {self.global_step} whose normalization constant C comes from "
                           f"the validation at step {self._calibration['step']} (other weights): log p of this "
                           "checkpoint is off by a constant until recalibrated. Validate at the last step: "
                           "trainer.check_val_every_n_epoch: null and max_steps a multiple of val_check_interval.")
        checkpoint[CHECKPOINT_KEY] = {
            "format_version": CHECKPOINT_FORMAT,
            "kind": "energy",
            "arch_config": self.net.arch_config,
            "state_prefix": "net.",
            "channels": self.hparams.in_chans,
            "image_range": [0.0, 1.0],
            "noise_parameter": "variance t = sigma**2",
            "log10_t_range": [lo, hi],
            "sigma_range_255": [255.0 * 10 ** (lo / 2), 255.0 * 10 ** (hi / 2)],
            "blind": False,
            "calibration": dict(self._calibration) if self._calibration else None,
        }
