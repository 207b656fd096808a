"""priorlab's EMA callback: the same averages as Lightning's EMAWeightAveraging, and a counter that survives loads."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch import nn

from priorlab.lightning_modules import EMA, DenoiserModule
from priorlab.lightning_modules.ema import HostCountedEMAModel
from tests.helpers import RandomBatches


def _fit(callback) -> dict[str, torch.Tensor]:
    pl.seed_everything(0)
    module = DenoiserModule(arch="test_bf_dncnn", in_chans=1, val_sigmas_255=())
    trainer = pl.Trainer(accelerator="cpu", max_steps=7, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=[callback])
    trainer.fit(module, train_dataloaders=RandomBatches(7, seed=1))
    return {k: v.clone() for k, v in module.state_dict().items()}  # the averaged weights after fit


def test_ema_gives_the_same_weights_as_lightnings_ema():
    ours, theirs = _fit(EMA(decay=0.8)), _fit(EMAWeightAveraging(decay=0.8))
    assert ours.keys() == theirs.keys()
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-5, atol=1e-6, msg=k)
    plain = _fit(pl.Callback())  # and the average is not simply the last weights
    assert any(not torch.allclose(ours[k], plain[k]) for k in ours if ours[k].is_floating_point())


def test_host_counter_follows_a_loaded_state():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))  # float params, float and integer buffers
    ema = HostCountedEMAModel(net, decay=0.5, use_buffers=True)
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
        net.train()(torch.randn(5, 3))
        ema.update_parameters(net)
    assert int(ema.n_averaged) == 3
    # avg after updates with w, w+1... : first copy (w+1), then lerp halfway to w+2 and w+3 -> w + 2.25
    w0 = copy.deepcopy(net)
    with torch.no_grad():
        for p in w0.parameters():
            p.sub_(3.0)
    torch.testing.assert_close(ema.module[0].weight, w0[0].weight + 2.25)
    assert ema.module[1].num_batches_tracked == net[1].num_batches_tracked  # integers copied, not averaged
    fresh = HostCountedEMAModel(net, decay=0.5, use_buffers=True)  # counter 0: its next update would copy
    fresh.load_state_dict(ema.state_dict())
    fresh.update_parameters(net)
    ema.update_parameters(net)
    assert int(fresh.n_averaged) == 4
    for a, b in zip(fresh.parameters(), ema.parameters()):
        torch.testing.assert_close(a, b)


def test_ema_rejects_a_bad_decay():
    with pytest.raises(ValueError, match="decay"):
        EMA(decay=1.0)


def test_ema_resumes_from_a_lightning_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    class LiveWeights(pl.Callback):  # the network's weights after every step (after the EMA update)
        def __init__(self) -> None:
            self.seen: list[dict[str, torch.Tensor]] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.seen.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    def fit(steps: int, ema: EMA, live: LiveWeights, ckpt_path: str | None = None) -> pl.Trainer:
        trainer = pl.Trainer(accelerator="cpu", max_steps=steps, logger=False, default_root_dir=tmp_path,
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                             num_sanity_val_steps=0,
                             callbacks=[ema, live, ModelCheckpoint(dirpath=tmp_path, save_last=True)])
        trainer.fit(DenoiserModule(arch="test_bf_dncnn", in_chans=1, val_sigmas_255=()),
                    train_dataloaders=RandomBatches(4, seed=1), ckpt_path=ckpt_path)
        return trainer

    pl.seed_everything(0)
    first = EMA(decay=0.5)
    fit(4, first, LiveWeights())
    expected = {k: v.clone() for k, v in first._average_model.module.state_dict().items()}
    resumed, live = EMA(decay=0.5), LiveWeights()
    trainer = fit(8, resumed, live, ckpt_path=str(tmp_path / "last.ckpt"))
    avg = resumed._average_model
    assert trainer.global_step == 8 and int(avg.n_averaged) == 8 and avg._count == 8  # counted on, not restarted
    assert len(live.seen) == 4
    for weights in live.seen:  # the saved average, carried on by four lerps (a restart would copy at step 5)
        expected = {k: (0.5 * v + 0.5 * weights[k]) if v.is_floating_point() else weights[k]
                    for k, v in expected.items()}
    got = avg.module.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_ema_pickles_for_ddp_spawn():
    # ddp_spawn pickles every callback; Lightning's avg_fn closure would make that fail.
    import pickle

    clone = pickle.loads(pickle.dumps(EMA(decay=0.9)))
    assert clone.decay == 0.9 and "avg_fn" not in clone._kwargs
