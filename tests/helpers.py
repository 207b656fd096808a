"""Small builders shared by tests (tiny Trainers on tiny data)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from priorlab.datamodules import PhotosDataModule
from priorlab.lightning_modules import DenoiserModule


def tiny_data(channels: int = 1, **kw) -> PhotosDataModule:
    args = dict(channels=channels, patch_size=16, patches_per_epoch=16, batch_size=8, val_max_size=32)
    args.update(kw)
    return PhotosDataModule(**args)


def tiny_module(channels: int = 1, arch: str = "test_bf_dncnn", **kw) -> DenoiserModule:
    return DenoiserModule(arch=arch, in_chans=channels, val_sigmas_255=(25.0, 50.0), **kw)


def tiny_trainer(root: Path, **kw) -> pl.Trainer:
    args = dict(accelerator="cpu", devices=1, max_steps=2, limit_val_batches=2, logger=False,
                enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root))
    args.update(kw)
    return pl.Trainer(**args)
