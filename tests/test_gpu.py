"""GPU-only checks (skipped without CUDA): the GPU configs as they train, a few steps each.

Run on a GPU machine with ``python -m pytest -m gpu tests/test_gpu.py`` (CI has no GPU).
"""

import csv
import math
from pathlib import Path

import pytest
import torch

from priorlab.cli import main

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# Each config's own model settings (bf16-mixed, compile with CUDA graphs, fused Adam, channels_last, EMA,
# denoising figure); data: the built-in photos, small patches, two validation images.
SMALL_DATA = ["--data.init_args.train_dirs", "[builtin:photos]", "--data.init_args.val_dirs", "null",
              "--data.init_args.test_dirs", "null", "--data.init_args.patches_per_epoch", "512",
              "--data.init_args.batch_size", "128", "--data.init_args.num_workers", "2",
              "--data.init_args.val_max_size", "128"]


@pytest.mark.parametrize("config", ["bf_dncnn_bsd400_gray", "bf_dncnn_photos_color", "bf_unet_photos_color",
                                    "bf_unet_photos_gray"])
def test_gpu_config_trains_validates_and_saves(tmp_path, monkeypatch, config):
    from priorlab.zoo import load_checkpoint

    monkeypatch.chdir(tmp_path)
    rc = main(["fit", "--config", str(REPO / "configs" / f"{config}.yaml"), *SMALL_DATA,
               "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar",
               "false", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")])
    assert rc in (0, None)
    last = next((tmp_path / "runs").rglob("last.ckpt"))
    net = load_checkpoint(last)
    assert net.prior_config["kind"] == "denoiser"
    with open(last.parents[1] / "metrics.csv") as f:
        psnr = [float(row["val/psnr"]) for row in csv.DictReader(f) if row.get("val/psnr")]
    assert len(psnr) == 2 and all(math.isfinite(p) for p in psnr)  # both epochs validated
