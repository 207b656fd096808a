"""Rebuild a trained network from a priorlab Lightning checkpoint (weights only, no pickles)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from priorlab.zoo.registry import build_from_config

CHECKPOINT_KEY = "priorlab"
CHECKPOINT_FORMAT = 1


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    # "_orig_mod." appears when a network was wrapped by torch.compile instead of compiled in place.
    out = {}
    for k, v in state.items():
        if k.startswith(prefix):
            out[k[len(prefix):].replace("_orig_mod.", "")] = v
    return out


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load the network of a checkpoint written by a priorlab LightningModule.

    The checkpoint's ``state_dict`` holds the EMA weights when the EMA callback was used (Lightning's
    weight-averaging callbacks store the average there). Reading uses ``weights_only=True`` and the
    state dict is loaded strictly.

    Args:
        path: a ``.ckpt`` file.
        map_location: device for the tensors.

    Returns:
        The network in eval mode, with ``prior_config`` (the checkpoint's priorlab metadata:
        kind, architecture, channels, noise range) attached.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a priorlab checkpoint, corrupt, or weights that do not match the architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files before refusing them
            warnings.simplefilter("ignore", UserWarning)
            ckpt: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        # torch's own text for a refused pickle suggests weights_only=False, which priorlab never does: keep only
        # the reason of a refused pickle ("Unsupported global: ..."), else the exception type
        text = str(err)
        reason = next((line.strip() for line in text.splitlines() if "Unsupported" in line), None)
        first = (reason or type(err).__name__)[:200]
        raise ValueError(f"cannot read {path} as a checkpoint: it is not a file written by `priorlab fit` (a "
                         "Lightning .ckpt), it is truncated, or it holds objects other than tensors and plain data, "
                         f"which priorlab does not unpickle ({first})") from err
    meta = ckpt.get(CHECKPOINT_KEY) if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "arch_config" not in meta:
        raise ValueError(f"{path} is not a priorlab checkpoint (no '{CHECKPOINT_KEY}' metadata); "
                         "it must be written by a priorlab LightningModule, e.g. by `priorlab fit`")
    if meta.get("format_version", 0) > CHECKPOINT_FORMAT:
        raise ValueError(f"{path} was written by a newer priorlab (checkpoint format "
                         f"{meta['format_version']} > {CHECKPOINT_FORMAT}); upgrade priorlab")
    net = build_from_config(meta["arch_config"])
    state = _strip(ckpt.get("state_dict", {}), meta.get("state_prefix", "net."))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"weights in {path} do not match {meta['arch_config']}: {err}") from err
    net.prior_config = dict(meta)
    calibration = meta.get("calibration") or {}
    step = ckpt.get("global_step")
    if calibration.get("step") is not None and step is not None and calibration["step"] != step:
        warnings.warn(f"{path}: the normalization constant C was calibrated at step {calibration['step']} but these "
                      f"weights are from step {step}, so log p is off by an unknown constant: recalibrate with "
                      "net.calibrate(held_out_images), or train with a validation at the last step "
                      "(max_steps a multiple of val_check_interval, check_val_every_n_epoch: null)", stacklevel=2)
    return net.eval()
