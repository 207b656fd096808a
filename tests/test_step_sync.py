"""The training step must not wait for the device on every step (a host sync stalls the GPU's queue)."""

from __future__ import annotations

import traceback

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging

from priorlab.lightning_modules import EMA, DenoiserModule, DualScoreModule
from tests.helpers import RandomBatches

STEPS = 12
BEFORE_FIRST_STEP = 4  # bool() of the data's length in Lightning's fit loop, once per fit


def _conversions(module: pl.LightningModule, *, progress_bar: bool, every: int,
                 monkeypatch: pytest.MonkeyPatch, callbacks: list | None = None) -> tuple[int, dict]:
    """Run STEPS training steps; count tensor-to-number conversions (.item(), float(), bool()) outside the optimizer.

    (Adam's .item() reads its step counter, a CPU tensor: no device sync, and a plain loop pays it too.)
    """
    calls = []
    item, to_float, to_bool = torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.__bool__

    def counting(original):
        def convert(self):
            caller = traceback.extract_stack(limit=2)[0]
            if not caller.filename.endswith(("/torch/optim/adam.py", "/torch/optim/optimizer.py")):
                calls.append(1)
            return original(self)
        return convert

    trainer = pl.Trainer(accelerator="cpu", max_steps=STEPS, logger=False, enable_checkpointing=False,
                         enable_progress_bar=progress_bar, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, log_every_n_steps=every, inference_mode=False,
                         callbacks=callbacks or [])
    monkeypatch.setattr(torch.Tensor, "item", counting(item))
    monkeypatch.setattr(torch.Tensor, "__float__", counting(to_float))
    monkeypatch.setattr(torch.Tensor, "__bool__", counting(to_bool))
    trainer.fit(module, train_dataloaders=RandomBatches(STEPS))
    monkeypatch.setattr(torch.Tensor, "item", item)
    monkeypatch.setattr(torch.Tensor, "__float__", to_float)
    monkeypatch.setattr(torch.Tensor, "__bool__", to_bool)
    return len(calls), dict(trainer.progress_bar_metrics)


@pytest.mark.parametrize("make", [
    lambda: DenoiserModule(arch="test_bf_dncnn", in_chans=1, val_sigmas_255=()),
    lambda: DenoiserModule(arch="test_bf_dncnn", in_chans=1, val_sigmas_255=(), loss_weighting="noise"),
    lambda: DualScoreModule(arch="test_energy_unet", in_chans=1),
], ids=["denoiser", "denoiser-noise-weighted", "dual-score"])
def test_no_host_sync_per_training_step(make, monkeypatch):
    # Without a progress bar (benchmarks, GPU configs): no conversion in the steps (Lightning's fit loop checks
    # the data's length a few times before the first step, whatever the number of steps).
    n, bar = _conversions(make(), progress_bar=False, every=STEPS + 1, monkeypatch=monkeypatch)
    assert n <= BEFORE_FIRST_STEP, f"{n} host syncs in {STEPS} steps without a progress bar"
    # With one: the loss reaches the bar, converted only every log_every_n_steps steps (here 2 of 12 steps,
    # one conversion per logged value: at most 3 values).
    n, bar = _conversions(make(), progress_bar=True, every=6, monkeypatch=monkeypatch)
    assert isinstance(bar.get("loss"), float) and bar["loss"] == bar["loss"]  # a number, not NaN
    assert 0 < n - BEFORE_FIRST_STEP <= 2 * 3, f"{n} host syncs in {STEPS} steps with log_every_n_steps=6"


def test_ema_callback_does_not_sync_per_step_where_lightnings_does(monkeypatch):
    make = lambda: DenoiserModule(arch="test_bf_dncnn", in_chans=1, val_sigmas_255=())  # noqa: E731
    n, _ = _conversions(make(), progress_bar=False, every=STEPS + 1, monkeypatch=monkeypatch,
                        callbacks=[EMA(decay=0.9)])
    assert n <= BEFORE_FIRST_STEP
    # Lightning's own EMA (kept as the reference for this test): two reads of its device counter per step.
    n, _ = _conversions(make(), progress_bar=False, every=STEPS + 1, monkeypatch=monkeypatch,
                        callbacks=[EMAWeightAveraging(decay=0.9)])
    assert n >= BEFORE_FIRST_STEP + STEPS


class _LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step - 1] = float(outputs["loss"])  # the step's loss, keyed as loggers write it


@pytest.mark.parametrize("every", [1, 5])
def test_train_values_are_logged_only_on_written_steps_and_written_exactly(tmp_path, every, monkeypatch):
    """log_every_n_steps=N: self.log runs on the N-th steps (and the run's last) only, as it costs host time,
    and the CSV holds the loss of exactly the N-th steps, as when logging every step."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    module = DenoiserModule(arch="test_bf_dncnn", in_chans=1, val_sigmas_255=())
    calls = []
    original = module.log_dict
    monkeypatch.setattr(module, "log_dict", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    recorder = _LossRecorder()
    trainer = pl.Trainer(accelerator="cpu", max_steps=STEPS, logger=CSVLogger(tmp_path, name="run"),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=every, callbacks=[recorder])
    trainer.fit(module, train_dataloaders=RandomBatches(STEPS))
    with open(tmp_path / "run" / "version_0" / "metrics.csv") as f:
        rows = {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}
    expected_steps = [s for s in range(STEPS) if (s + 1) % every == 0]
    assert sorted(rows) == expected_steps and len(calls) == len(set(expected_steps) | {STEPS - 1})
    for step, value in rows.items():
        assert value == pytest.approx(recorder.losses[step], rel=1e-6)
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(recorder.losses[STEPS - 1])
