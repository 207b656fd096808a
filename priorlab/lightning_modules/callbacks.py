"""Callbacks of the training shell: denoising figures (logged and written as PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from priorlab.core.errors import OutputExistsError
from priorlab.core.noise import sigma_from_255
from priorlab.files import write_image
from priorlab.lightning_modules.denoiser import validation_noise
from priorlab.plotting import DenoisedPanel, denoising_figure, save_figure


def run_dir(trainer: pl.Trainer) -> Path:
    """The folder of this run, without a collective call (safe on rank 0 alone; rank 0's value is the one used).

    CSV and TensorBoard: the logger's ``save_dir/name/version_N``. Other loggers (wandb) have no folder of their
    own per run (``trainer.log_dir`` is their shared ``save_dir``, so a second run would find the first one's
    config and figures there): ``save_dir/name/version``, the folder whose ``checkpoints/`` ModelCheckpoint fills.
    Without a logger: ``default_root_dir``.
    """
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    if isinstance(logger, (CSVLogger, TensorBoardLogger)):
        return Path(logger.log_dir)
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / version


def _psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    mse = (x.float().clamp(0, 1) - ref.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else -10.0 * float(np.log10(mse))


def _crop(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None:
        return x
    H, W = x.shape[-2:]
    top, left = max(0, (H - size) // 2), max(0, (W - size) // 2)
    return x[..., top:top + size, left:left + size]


class DenoiseFigure(pl.Callback):
    """Denoise validation images at one noise level and show noisy | denoised | clean with PSNRs.

    After validation (every ``every_n_epochs``) the grid is logged to the logger (TensorBoard or
    wandb images) and written to ``<run>/figures/val_latest.png``; at the end of ``fit`` a final
    figure of the validation images, ``<run>/figures/denoised_sigma<σ>.png``, is written with the
    final (EMA) weights and its path and mean PSNR printed.

    Args:
        sigma_255: noise level on the 0-255 scale.
        max_images: how many validation images to show.
        every_n_epochs: how often to draw during training (0: only at the end).
        crop: center-crop shown images to this size (None: full images).
    """

    def __init__(self, sigma_255: float = 25.0, max_images: int = 6, every_n_epochs: int = 1,
                 crop: int | None = 256) -> None:
        self.sigma_255 = sigma_255
        self.max_images = max_images
        self.every_n_epochs = every_n_epochs
        self.crop = crop
        self.last_path: Path | None = None
        self.last_psnr: float | None = None

    def _panels(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[DenoisedPanel]:
        loaders = trainer.val_dataloaders
        if loaders is None and trainer.datamodule is not None:
            loaders = trainer.datamodule.val_dataloader()
        if isinstance(loaders, (list, tuple)):
            loaders = loaders[0] if loaders else None
        if loaders is None:
            return []
        sigma = sigma_from_255(self.sigma_255)
        panels = []
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            for i, batch in enumerate(loaders):
                if i >= self.max_images:
                    break
                x = batch[0] if isinstance(batch, (list, tuple)) else batch
                x = _crop(x[:1].to(pl_module.device), self.crop)
                y = x + validation_noise(x, sigma, index=i, sigma_index=-1)
                x_hat = pl_module(y).float()
                panels.append(DenoisedPanel(noisy=y[0].clamp(0, 1), denoised=x_hat[0].clamp(0, 1), clean=x[0],
                                            title=f"#{i}", psnr_in=_psnr(y, x), psnr_out=_psnr(x_hat, x)))
        pl_module.train(was_training)
        return panels

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, name: str, title: str) -> Path | None:
        panels = self._panels(trainer, pl_module)
        if not panels:
            return None
        self.last_psnr = float(np.mean([p.psnr_out for p in panels]))
        fig = denoising_figure(panels, suptitle=f"{title}: σ = {self.sigma_255:g}/255, "
                                                f"mean output PSNR {self.last_psnr:.2f} dB")
        fig.canvas.draw()
        image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        if trainer.fast_dev_run:  # a smoke run: drawn, but like Lightning's loggers and checkpoints, no files
            import matplotlib.pyplot as plt

            plt.close(fig)
            return None
        path = save_figure(fig, run_dir(trainer) / "figures" / name)  # rank 0 only: no trainer.log_dir broadcast
        _log_image(trainer, f"denoised_sigma{self.sigma_255:g}", image)
        self.last_path = path
        return path

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        # Drawn during validation, with the weights that validation uses: a weight-averaging callback swaps the
        # average in at the start of the validation epoch and back at its end, and at the epoch's end the
        # callbacks listed before this one have already swapped the raw weights back.
        if batch_idx != 0 or dataloader_idx != 0:
            return
        if trainer.sanity_checking or not trainer.is_global_zero or self.every_n_epochs <= 0:
            return
        if trainer.state.fn != "fit" or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._draw(trainer, pl_module, "val_latest.png", f"epoch {trainer.current_epoch}")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        path = self._draw(trainer, pl_module, f"denoised_sigma{self.sigma_255:g}.png", "final weights")
        if path is not None:
            rank_zero_info(f"priorlab: denoising figure (σ = {self.sigma_255:g}/255, mean PSNR "
                           f"{self.last_psnr:.2f} dB) written to {path}")


class PredictionWriter(BasePredictionWriter):
    """``priorlab predict`` writes what it predicts: each image as an 8-bit PNG, named after its input.

    Files go to ``output_dir`` (default: ``<run>/predictions``, the run's own folder). Names come from the
    datamodule's ``predict_names()`` when it has one (``PhotosDataModule``: the file names of ``test_dirs``, or
    the built-in photo names), else the image's index (``00007.png``). An existing file is never replaced.

    Args:
        output_dir: folder of the PNGs (created if missing).
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.folder: Path | None = None
        self.names: list[str] | None = None
        self.written = 0

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # every rank writes its share of the images, into rank 0's folder
        folder = str(Path(self.output_dir) if self.output_dir else run_dir(trainer) / "predictions")
        self.folder = Path(trainer.strategy.broadcast(folder if trainer.is_global_zero else None))
        names = getattr(trainer.datamodule, "predict_names", None)
        self.names = list(names()) if callable(names) else None
        self.written = 0
        taken = [self.folder / f"{n}.png" for n in self.names or [] if (self.folder / f"{n}.png").exists()]
        if taken:  # refused before anything is written
            raise OutputExistsError(f"{taken[0]} exists ({len(taken)} of the {len(self.names or [])} outputs do); "
                                  f"predictions never replace files: choose another output_dir or move them away")

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        assert self.folder is not None
        images = prediction if isinstance(prediction, torch.Tensor) else prediction[0]
        if not isinstance(images, torch.Tensor) or images.ndim != 4:  # not images (an energy model's log p)
            return
        indices = list(batch_indices) if batch_indices else [batch_idx * images.shape[0] + i
                                                              for i in range(images.shape[0])]
        for index, image in zip(indices, images):
            name = self.names[index] if self.names and index < len(self.names) else f"{index:05d}"
            path = self.folder / f"{name}.png"
            if path.exists():
                raise OutputExistsError(f"{path} exists; predictions never replace files: choose another "
                                      f"output_dir (--trainer.callbacks+=PredictionWriter ...) or move it away")
            path.parent.mkdir(parents=True, exist_ok=True)
            write_image(image, path)
            self.written += 1

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.written:
            print(f"priorlab: {self.written} predicted image(s) written to {self.folder}", flush=True)


def _log_image(trainer: pl.Trainer, key: str, image: np.ndarray) -> None:
    """Send an (H, W, 3) uint8 image to every logger that takes images."""
    for logger in trainer.loggers:
        kind = type(logger).__name__
        if kind == "TensorBoardLogger":
            logger.experiment.add_image(key, image, trainer.global_step, dataformats="HWC")
        elif kind == "WandbLogger":
            logger.log_image(key=key, images=[image], step=trainer.global_step)
