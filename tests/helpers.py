"""Small builders shared by tests (tiny Trainers on tiny data)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch

from priorlab.datamodules import PhotosDataModule
from priorlab.lightning_modules import DenoiserModule


class RandomBatches:
    """``length`` batches of uniform random images, the same for every pass (a Trainer's train_dataloaders)."""

    def __init__(self, length: int, shape: tuple[int, ...] = (4, 1, 16, 16), seed: int = 0) -> None:
        self.length, self.shape, self.seed = length, shape, seed

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        for _ in range(self.length):
            yield torch.rand(self.shape, generator=g)


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


def assert_ddp_matches_one_process(tmp_path: Path, monkeypatch, make_module, make_data, **trainer_kw) -> None:
    """One step on the full batch in one process and on two halves with ``ddp_spawn`` (gloo) must give
    the same gradients. The modules save theirs as ``grads_<world>_<rank>.pt`` in ``tmp_path``;
    ``make_data(batch_size)`` builds the datamodule.
    """
    import socket

    import torch

    kw = dict(max_steps=1, limit_val_batches=0, enable_checkpointing=False, **trainer_kw)
    torch.manual_seed(0)
    tiny_trainer(tmp_path, **kw).fit(make_module(), datamodule=make_data(8))
    torch.manual_seed(0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MASTER_PORT", str(s.getsockname()[1]))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    tiny_trainer(tmp_path, strategy="ddp_spawn", devices=2, **kw).fit(make_module(), datamodule=make_data(4))
    ref = torch.load(tmp_path / "grads_1_0.pt")
    for rank in (0, 1):
        got = torch.load(tmp_path / f"grads_2_{rank}.pt")
        for name, g in ref.items():
            torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
