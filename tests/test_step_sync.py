"""The training step must not wait for the device on every step (a host sync stalls the GPU's queue)."""

from __future__ import annotations

import traceback

import lightning.pytorch as pl
import pytest
import torch

from priorlab.lightning_modules import DenoiserModule, DualScoreModule

STEPS = 12


class _Batches:
    def __len__(self) -> int:
        return STEPS

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(STEPS):
            yield torch.rand(4, 1, 16, 16, generator=g)


def _conversions(module: pl.LightningModule, *, progress_bar: bool, every: int,
                          monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict]:
    """Run STEPS training steps; count tensor-to-number conversions (.item(), float()) outside the optimizer.

    (Adam's .item() reads its step counter, a CPU tensor: no device sync, and a plain loop pays it too.)
    """
    calls = []
    item, to_float = torch.Tensor.item, torch.Tensor.__float__

    def counting(original):
        def convert(self):
            caller = traceback.extract_stack(limit=2)[0]
            if "/torch/optim/" not in caller.filename:
                calls.append(1)
            return original(self)
        return convert

    trainer = pl.Trainer(accelerator="cpu", max_steps=STEPS, logger=False, enable_checkpointing=False,
                         enable_progress_bar=progress_bar, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, log_every_n_steps=every, inference_mode=False)
    monkeypatch.setattr(torch.Tensor, "item", counting(item))
    monkeypatch.setattr(torch.Tensor, "__float__", counting(to_float))
    trainer.fit(module, train_dataloaders=_Batches())
    monkeypatch.setattr(torch.Tensor, "item", item)
    monkeypatch.setattr(torch.Tensor, "__float__", to_float)
    return len(calls), dict(trainer.progress_bar_metrics)


@pytest.mark.parametrize("make", [
    lambda: DenoiserModule(arch="test_bf_dncnn", in_chans=1, val_sigmas_255=()),
    lambda: DenoiserModule(arch="test_bf_dncnn", in_chans=1, val_sigmas_255=(), loss_weighting="noise"),
    lambda: DualScoreModule(arch="test_energy_unet", in_chans=1),
], ids=["denoiser", "denoiser-noise-weighted", "dual-score"])
def test_no_host_sync_per_training_step(make, monkeypatch):
    # Without a progress bar (benchmarks, GPU configs): no conversion at all in the steps.
    n, bar = _conversions(make(), progress_bar=False, every=STEPS + 1, monkeypatch=monkeypatch)
    assert n == 0, f"{n} host syncs in {STEPS} steps without a progress bar"
    # With one: the loss reaches the bar, converted only every log_every_n_steps steps (here 2 of 12 steps,
    # one conversion per logged value: at most 3 values).
    n, bar = _conversions(make(), progress_bar=True, every=6, monkeypatch=monkeypatch)
    assert isinstance(bar.get("loss"), float) and bar["loss"] == bar["loss"]  # a number, not NaN
    assert 0 < n <= 2 * 3, f"{n} host syncs in {STEPS} steps with log_every_n_steps=6"
