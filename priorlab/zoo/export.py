"""Export a training checkpoint to the published folder (config.json, model.safetensors, README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from priorlab.zoo.artifact import build_config, save_folder
from priorlab.zoo.card import render_card
from priorlab.zoo.checkpoint import load_checkpoint


def export_checkpoint(ckpt: str | Path, out: str | Path, *, name: str | None = None,
                      training: dict[str, Any] | None = None, metrics: list[dict[str, Any]] | None = None,
                      metrics_source: str | None = None, summary: str | None = None,
                      intended_use: str | None = None, limitations: str | None = None,
                      timm_name: str | None = None, overwrite: bool = False) -> Path:
    """Turn a priorlab Lightning checkpoint into a prior folder ready for ``priorlab hub push``.

    The checkpoint's ``state_dict`` holds the EMA weights when training used the EMA callback
    (Lightning's weight averaging writes the average there), so those are what gets published.

    Args:
        ckpt: checkpoint written by ``priorlab fit``.
        out: output folder (refused if it already holds files, unless ``overwrite``).
        name: the prior's name (also the title of its card).
        training: provenance rendered in the card (data, recipe, hardware, duration, ...). The
            checkpoint's own facts (noise schedule, σ range) are added.
        metrics: measured results (see :mod:`priorlab.zoo.card` for the keys it renders).
        metrics_source: the command that measured them.
        summary, intended_use, limitations: card paragraphs.
        timm_name: ``arch.tag`` when the prior is in the catalog with a timm tag.
        overwrite: replace config.json, model.safetensors and README.md in an existing folder.

    Returns:
        The folder.
    """
    net = load_checkpoint(ckpt)
    meta = net.prior_config
    facts = {"sigma_schedule": meta.get("sigma_schedule")}
    training = {**{k: v for k, v in facts.items() if v is not None}, **(training or {})}
    extra = {"metrics_source": metrics_source} if metrics_source else None
    config = build_config(net, kind=meta.get("kind", "denoiser"), sigma_range_255=meta["sigma_range_255"],
                          training=training, metrics=metrics, name=name, extra=extra)
    params = sum(p.numel() for p in net.parameters())
    card = render_card(config, name=name, params=params, summary=summary, intended_use=intended_use,
                       limitations=limitations, timm_name=timm_name)
    return save_folder(net, config, out, card=card, overwrite=overwrite)
