"""Export a training checkpoint to the published folder (config.json, model.safetensors, README.md).

The card's Training section is filled from the checkpoint itself: Lightning stores the datamodule's and
the LightningModule's constructor arguments (``datamodule_hyper_parameters``, ``hyper_parameters``), the
loop state (epochs, optimizer steps) and the callbacks' state (weight averaging). Trainer settings that no
checkpoint holds (precision; the EMA decay, unless priorlab's EMA callback stored it in its state) are read
from the ``config.yaml`` that ``priorlab fit`` writes into the run folder (beside ``checkpoints/``) when it is
there and belongs to the same run.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from priorlab.zoo.artifact import build_config, save_folder
from priorlab.zoo.card import render_card
from priorlab.zoo.checkpoint import load_checkpoint


def _public(source: Any) -> str:
    """A data source as the user wrote it, with their home folder shortened to ``~`` (the card is public).

    Relative paths stay relative and ``builtin:``/``hf:`` names stay as they are; a ``prefix:PATH``
    (``folder:``, ``npz:``) has its path shortened the same way.
    """
    text = str(source)
    prefix, sep, rest = text.partition(":")
    if sep and prefix.isalpha() and len(prefix) > 1 and rest.startswith(("/", "~")):
        return f"{prefix}:{_public(rest)}"
    home = str(Path.home()).rstrip("/")
    if home and (text == home or text.startswith(home + "/")):
        return "~" + text[len(home):]
    return text


def _num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else f"{value:g}" if isinstance(
        value, float) else str(value)


def _data_facts(dm: dict[str, Any]) -> dict[str, Any]:
    """Training data and batches from a priorlab datamodule's hyper-parameters (recognized by their names)."""
    facts: dict[str, Any] = {}
    batch = dm.get("batch_size")
    if "train_dirs" in dm:  # PhotosDataModule
        dirs = dm["train_dirs"]
        dirs = [dirs] if isinstance(dirs, str) else list(dirs or [])
        facts["data"] = (", ".join(_public(d) for d in dirs) if dirs
                         else "builtin:photos (priorlab's built-in training photos)")
    elif "path" in dm and "image_column" in dm:  # ImageFolderDataModule: a folder or a Hub dataset
        limit = f", its first {_num(dm['max_images'])} images" if dm.get("max_images") else ""
        facts["data"] = f"{_public(dm['path'])} (split {dm.get('train_split', 'train')}{limit})"
    elif "source" in dm and "resolution" in dm:  # ImageNetDataModule (any of its sources)
        limit = f", its first {_num(dm['max_train_images'])} images" if dm.get("max_train_images") else ""
        r = dm["resolution"]
        facts["data"] = f"{_public(dm['source'])} at {r}x{r} (split {dm.get('train_split', 'train')}{limit})"
        if str(dm["source"]).startswith("hf:"):
            facts["dataset_ids"] = [str(dm["source"])[3:]]
    elif "val_size" in dm and "eval_batch_size" in dm:  # FashionMNISTDataModule
        where = dm.get("source") or (_public(dm["root"]) if dm.get("root") else
                                     "the Debian package dataset-fashion-mnist")
        limit = (f"the first {_num(dm['train_limit'])} images of the train split" if dm.get("train_limit")
                 else "the train split")
        facts["data"] = (f"Fashion-MNIST from {where}: {limit}, without its last {_num(dm['val_size'])} images "
                         "(held out for validation)")
        if str(dm.get("source") or "").startswith("hf:"):
            facts["dataset_ids"] = [str(dm["source"])[3:]]
    elif "alpha" in dm and "variance" in dm:  # GaussianFieldDataModule
        s = dm.get("size")
        facts["data"] = (f"synthetic Gaussian fields, {s}x{s}, power spectrum 1/f^{_num(dm['alpha'])}, variance "
                         f"{_num(dm['variance'])}, mean {_num(dm.get('mean'))}: {_num(dm.get('train_samples'))} "
                         "training samples")
    if "patch_size" in dm and batch is not None:
        p = dm["patch_size"]
        scales = dm.get("scales")
        at = f" of the images rescaled by {', '.join(_num(float(s)) for s in scales)}" if scales else ""
        per_epoch = f", {_num(dm['patches_per_epoch'])} patches per epoch" if dm.get("patches_per_epoch") else ""
        facts["batches"] = (f"{_num(batch)} per step and device: random {p}x{p} patches{at}, each randomly "
                            f"flipped/rotated{per_epoch}")
    elif batch is not None:
        flips = ", randomly flipped left-right" if dm.get("hflip") else ""
        facts["batches"] = f"{_num(batch)} per step and device: whole images{flips}"
    return facts


def _optimizer(hp: dict[str, Any], ckpt: dict[str, Any]) -> str | None:
    lr = hp.get("lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool):
        return None
    states = ckpt.get("optimizer_states") or [{}]
    groups = states[0].get("param_groups") if isinstance(states[0], dict) else None
    group = groups[0] if groups else {}
    parts = [f"learning rate {_num(float(lr))}"]
    if {"betas", "amsgrad"} <= set(group):  # the optimizer's own state names it (absent from weights-only files)
        parts.insert(0, "AdamW" if group.get("decoupled_weight_decay") else "Adam")
    if hp.get("weight_decay"):
        parts.append(f"weight decay {_num(float(hp['weight_decay']))}")
    if hp.get("milestones"):  # MultiStepLR stepped once per epoch (DenoiserModule)
        ends = ", ".join(str(m) for m in hp["milestones"])
        parts.append(f"multiplied by {_num(float(hp.get('lr_gamma', 0.1)))} at the end of epoch(s) {ends}")
    elif hp.get("lr_halving_steps"):  # StepLR stepped once per optimizer step (DualScoreModule)
        parts.append(f"halved every {_num(int(hp['lr_halving_steps']))} steps")
    else:
        parts.append("constant")
    final = group.get("lr")
    if isinstance(final, float) and final != float(lr):
        parts.append(f"{_num(final)} at the last step")
    return ", ".join(parts)


def _run_config(ckpt_path: Path, hp: dict[str, Any], dm: dict[str, Any]) -> dict[str, Any]:
    """The LightningCLI ``config.yaml`` of the run that wrote the checkpoint, if it is beside it and matches."""
    import yaml

    for candidate in (ckpt_path.parent / "config.yaml", ckpt_path.parent.parent / "config.yaml"):
        if not candidate.is_file():
            continue
        try:
            cfg = yaml.safe_load(candidate.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(cfg, dict) or not isinstance(cfg.get("trainer"), dict):
            continue
        model, data = cfg.get("model") or {}, cfg.get("data") or {}
        model_args = (model.get("init_args") or {}) if isinstance(model, dict) else {}
        data_args = (data.get("init_args") or {}) if isinstance(data, dict) else {}
        same = all(model_args.get(k) == hp.get(k) for k in ("arch", "lr") if k in model_args and k in hp) and all(
            data_args.get(k) == dm.get(k) for k in ("patch_size", "batch_size") if k in data_args and k in dm)
        if same:  # a config.yaml of another run left in the same folder is ignored
            return cfg
    return {}


def _ema_callback(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """The EMA callback entry of a run's config.yaml, if the run used one."""
    for cb in ((run or {}).get("trainer") or {}).get("callbacks") or []:
        if isinstance(cb, dict) and str(cb.get("class_path", "")).rsplit(".", 1)[-1] in ("EMA", "EMAWeightAveraging"):
            return cb
    return None


def _ema_decay(run: dict[str, Any] | None) -> float | None:
    decay = ((_ema_callback(run) or {}).get("init_args") or {}).get("decay")
    return float(decay) if isinstance(decay, (int, float)) else None


RAW_WEIGHTS_OF_AN_EMA_RUN = ("the weights of the last optimizer step, not their EMA: the run used the EMA callback, "
                             "but this checkpoint was saved weights-only (save_weights_only=True), which leaves the "
                             "average out")


def training_from_checkpoint(ckpt: str | Path) -> dict[str, Any]:
    """What a priorlab checkpoint records about its training, as card provenance (``config.json`` ``training``).

    Keys (only those the checkpoint holds): ``data`` (training sources as written in the datamodule's
    arguments, the home folder shortened to ``~``), ``batches`` (patch size, scales, batch, patches per
    epoch), ``length`` (optimizer steps and epochs), ``optimizer`` (learning rate and its schedule), ``init``
    (the prior a fine-tuned model started from, its ``init_from``),
    ``sigma_schedule``, ``ema`` (whether the weights are an EMA, and its decay when known), ``precision``
    (when the run's ``config.yaml`` is found), and ``dataset_ids`` (Hub datasets, for the card's front matter).

    The file is read with ``weights_only=True`` (no pickles) and memory-mapped.
    """
    import torch

    path = Path(ckpt)
    try:  # memory-mapped: only the small metadata is needed, not a second copy of the weights
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # mmap needs the zip format of torch.save; older files are read whole
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(raw, dict):
        return {}
    hp = raw.get("hyper_parameters") or {}
    dm = raw.get("datamodule_hyper_parameters") or {}
    meta = raw.get("priorlab") or {}
    facts: dict[str, Any] = {}
    if hp.get("init_from"):  # a fine-tuned prior names its parent first: the rest of the card is the fine-tuning
        parent = _public(hp["init_from"])
        if parent.endswith(".ckpt"):
            card = ""
        elif parent.startswith("hf-hub:"):
            card = " (its card: the README.md of that Hub repository)"
        else:  # a catalog name or local-dir:, which `zoo show` prints
            card = f" (its card: `priorlab zoo show {parent}`)"
        facts["init"] = (f"fine-tuned from `{parent}`{card}; the data, length and optimizer below are those of the "
                         "fine-tuning")
    facts.update(_data_facts(dm))
    steps = raw.get("global_step")
    if isinstance(steps, int):
        progress = (((raw.get("loops") or {}).get("fit_loop") or {}).get("epoch_progress") or {}).get("total") or {}
        epochs = progress.get("started", (raw.get("epoch") or 0) + 1)
        facts["length"] = (f"{_num(steps)} optimizer step{'s' if steps != 1 else ''} in {_num(epochs)} "
                           f"epoch{'s' if epochs != 1 else ''}")
    optimizer = _optimizer(hp, raw)
    if optimizer:
        facts["optimizer"] = optimizer
    if meta.get("sigma_schedule") is not None:
        facts["sigma_schedule"] = meta["sigma_schedule"]
    run = _run_config(path, hp, dm)
    states = raw.get("callbacks") or {}
    callbacks = [str(k).split("{")[0] for k in states]
    if any(c in ("EMA", "EMAWeightAveraging") for c in callbacks):
        saved = [v.get("decay") for k, v in states.items() if str(k).split("{")[0] == "EMA" and isinstance(v, dict)]
        decay = next((float(d) for d in saved if isinstance(d, (int, float))), None)  # priorlab's EMA stores it
        decay = decay if decay is not None else _ema_decay(run)
        facts["ema"] = (f"EMA of the weights{f' (decay {_num(decay)})' if decay is not None else ''}, as saved by "
                        "Lightning's weight averaging: the published weights are the average")
    elif "averaging_state" in raw:
        facts["ema"] = "an average of the weights (Lightning's weight averaging): the published weights are the average"
    elif "callbacks" not in raw and _ema_callback(run) is not None:
        facts["ema"] = RAW_WEIGHTS_OF_AN_EMA_RUN
    elif "callbacks" in raw:  # a weights-only checkpoint has no callback state: then nothing is claimed
        facts["ema"] = "the weights of the last optimizer step (no weight averaging)"
    if run:
        precision = run["trainer"].get("precision")
        facts["precision"] = str(precision) if precision is not None else "32-true (Lightning's default)"
    return facts


def export_checkpoint(ckpt: str | Path, out: str | Path, *, name: str | None = None,
                      training: dict[str, Any] | None = None, metrics: list[dict[str, Any]] | None = None,
                      metrics_source: str | None = None, summary: str | None = None,
                      intended_use: str | None = None, limitations: str | None = None,
                      timm_name: str | None = None, load_spec: str | None = None,
                      overwrite: bool = False) -> Path:
    """Turn a priorlab Lightning checkpoint into a prior folder ready for ``priorlab hub push``.

    The checkpoint's ``state_dict`` holds the EMA weights when training used the EMA callback
    (Lightning's weight averaging writes the average there), so those are what gets published.

    Args:
        ckpt: checkpoint written by ``priorlab fit``.
        out: output folder (refused if it already holds files, unless ``overwrite``).
        name: the prior's name (also the title of its card).
        training: provenance rendered in the card (data, recipe, hardware, duration, ...). It starts from
            what the checkpoint records (:func:`training_from_checkpoint`); a key given here replaces the
            recorded one, and a key given as None removes it.
        metrics: measured results (see :mod:`priorlab.zoo.card` for the keys it renders).
        metrics_source: the command that measured them.
        summary, intended_use, limitations: card paragraphs.
        timm_name: ``arch.tag`` when the prior is in the catalog with a timm tag.
        load_spec: what the card tells users to pass to ``zoo.load`` / ``--prior`` (default
            ``local-dir:<out>``; give ``hf-hub:ORG/NAME`` for a folder to be pushed to the Hub).
        overwrite: replace config.json, model.safetensors and README.md in an existing folder.

    Returns:
        The folder.
    """
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name):
        raise ValueError(f"name {name!r} is not a valid prior name: use letters, digits, '-', '_' and '.' (as in a "
                         "Hub repository name), e.g. bf-dncnn-gray")
    net = load_checkpoint(ckpt)
    meta = net.prior_config
    recorded = training_from_checkpoint(ckpt)
    if recorded.get("ema") == RAW_WEIGHTS_OF_AN_EMA_RUN:
        warnings.warn(f"{ckpt}: {RAW_WEIGHTS_OF_AN_EMA_RUN}; the card says so. To publish the average, export a "
                      "full checkpoint of the run (ModelCheckpoint without save_weights_only, e.g. last.ckpt)",
                      UserWarning, stacklevel=2)
    merged = {**recorded, **(training or {})}
    training = {k: v for k, v in merged.items() if v is not None}
    extra = {"metrics_source": metrics_source} if metrics_source else None
    config = build_config(net, kind=meta.get("kind", "denoiser"), sigma_range_255=meta["sigma_range_255"],
                          training=training, metrics=metrics, name=name, extra=extra)
    params = sum(p.numel() for p in net.parameters())
    card = render_card(config, name=name, load_spec=load_spec or f"local-dir:{out}", params=params,
                       summary=summary, intended_use=intended_use, limitations=limitations, timm_name=timm_name)
    return save_folder(net, config, out, card=card, overwrite=overwrite)
