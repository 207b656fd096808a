"""The published form of a prior: a folder with ``config.json``, ``model.safetensors`` and ``README.md``.

``config.json`` rebuilds the network from the folder alone (DESIGN.md "Contracts", ecosystem.md §2.2):

* ``format_version`` and the ``priorlab_version`` that wrote it;
* ``class_path`` / ``init_args`` in jsonargparse form, plus the registry ``architecture`` name;
* the semantic contract: ``kind`` (denoiser | energy), ``parametrization`` (what the network
  returns), ``channels``, ``image_range``, ``sigma_units``, the training ``sigma_range_255``,
  ``size_multiple`` (height and width must be multiples of it);
* ``training`` (data, split, recipe, source commit, hardware, duration) and ``metrics`` (a list of
  measured results) — free-form provenance that the card renders.

Only safetensors weights are read, and loading is strict: a missing or unexpected key is an error.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from priorlab.files import atomic_path, write_text_atomic
from priorlab.zoo.registry import build_from_config, get_spec

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
KINDS = ("denoiser", "energy")
PARAMETRIZATIONS = {"denoiser": "denoised", "energy": "energy"}
SIGMA_UNITS = "standard deviation in image units: sigma = sigma_255 / 255 for images in [0, 1]"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _size_multiple(init_args: dict[str, Any]) -> int:
    # A UNet with k scales halves the image k times (priorlab.zoo.unet); other families take any size.
    blocks = init_args.get("num_blocks") or init_args.get("num_scales")
    return 2 ** int(blocks) if blocks else 1


def build_config(net: nn.Module, *, kind: str = "denoiser", sigma_range_255: tuple[float, float] | list[float],
                 training: dict[str, Any] | None = None, metrics: list[dict[str, Any]] | None = None,
                 name: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` of a network built by the zoo (it carries ``arch_config``).

    Args:
        net: network built through :func:`priorlab.zoo.create_model` or loaded from a checkpoint.
        kind: ``denoiser`` (returns x̂) or ``energy`` (an EnergyModel).
        sigma_range_255: training noise range on the 0–255 scale.
        training: provenance (data, split, recipe, commit, hardware, duration...).
        metrics: measured results, each a flat dict (e.g. dataset, sigma_255, psnr, ssim, bm3d_psnr).
        name: the prior's name, if it has one.
        extra: further keys (must not clash with the standard ones).
    """
    from priorlab import __version__

    arch = getattr(net, "arch_config", None)
    if not isinstance(arch, dict) or "architecture" not in arch:
        raise ValueError("the network has no arch_config; build it with priorlab.zoo.create_model or load it "
                         "from a priorlab checkpoint")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    spec = get_spec(arch["architecture"])
    init_args = dict(arch["init_args"])
    low, high = (float(s) for s in sigma_range_255)
    config: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "priorlab_version": __version__,
        "name": name,
        "kind": kind,
        "parametrization": PARAMETRIZATIONS[kind],
        "architecture": spec.name,
        "class_path": f"{spec.cls.__module__}.{spec.cls.__qualname__}",
        "init_args": init_args,
        "channels": int(init_args.get("in_chans", 1)),
        "image_range": [0.0, 1.0],
        "sigma_units": SIGMA_UNITS,
        "sigma_range_255": [low, high],
        "size_multiple": _size_multiple(init_args),
        "training": dict(training or {}),
        "metrics": list(metrics or []),
    }
    shape = getattr(net, "calibration_shape", None) if kind == "energy" else None
    if shape is not None:  # the only size log_prob is normalized for (the weights carry it too)
        config["calibration_shape"] = [int(s) for s in shape]
    for key, value in (extra or {}).items():
        if key in config:
            raise ValueError(f"extra key {key!r} clashes with a standard config.json key")
        config[key] = value
    json.dumps(config)  # fail here, not halfway through writing, on values JSON cannot hold
    return config


def check_config(config: Any, source: str = "config.json") -> dict[str, Any]:
    """Validate a parsed ``config.json``; returns it. Raises ValueError with what is wrong."""
    if not isinstance(config, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(config).__name__}")
    version = config.get("format_version")
    if not isinstance(version, int):
        raise ValueError(f"{source} has no integer format_version; it was not written by `priorlab export`")
    if version > FORMAT_VERSION:
        raise ValueError(f"{source} has format_version {version}, newer than this priorlab understands "
                         f"({FORMAT_VERSION}); upgrade priorlab (pip install -U priorlab)")
    if version < 1:
        raise ValueError(f"{source} has format_version {version}; no priorlab release wrote that format")
    missing = [k for k in ("architecture", "init_args", "kind", "channels", "sigma_range_255") if k not in config]
    if missing:
        raise ValueError(f"{source} lacks {', '.join(missing)}")
    if config["kind"] not in KINDS:
        raise ValueError(f"{source}: unknown kind {config['kind']!r} (known: {', '.join(KINDS)})")
    return config


def read_config(folder: str | Path) -> dict[str, Any]:
    """Read and validate ``folder/config.json``."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a prior folder holds {CONFIG_NAME}, {WEIGHTS_NAME} and "
                                f"{CARD_NAME} (write one with `priorlab export`)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    return check_config(config, str(path))


def _state_dict_for_saving(net: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory or are not contiguous; copies cost nothing here.
    return {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}


def load_folder(folder: str | Path, *, map_location: str | torch.device = "cpu",
                expected_sha256: str | None = None) -> nn.Module:
    """Rebuild a prior from its folder (strict; safetensors only).

    Args:
        folder: directory with ``config.json`` and ``model.safetensors``.
        map_location: device for the weights.
        expected_sha256: if given, the weights file must have this sha256.

    Returns:
        The network in eval mode with ``prior_config`` (the parsed config.json) attached.

    Raises:
        FileNotFoundError: missing folder or file.
        ValueError: bad config, hash mismatch, corrupt weights, missing or unexpected keys.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"prior folder not found: {folder}")
    config = read_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        other = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        hint = f" (found {', '.join(other)}: pickled weights are never loaded)" if other else ""
        raise FileNotFoundError(f"{weights} not found{hint}")
    if expected_sha256 is not None:
        actual = sha256_file(weights)
        if actual != expected_sha256:
            raise ValueError(f"{weights} has sha256 {actual}, expected {expected_sha256}: the file was altered "
                             "or is not the registered release; it was not loaded")
    net = build_from_config({"architecture": config["architecture"], "init_args": config["init_args"]})
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"cannot read {weights}: {err}") from err
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"weights in {weights} do not match {config['architecture']} "
                         f"{config['init_args']}: {err}") from err
    net.to(map_location)
    net.prior_config = copy.deepcopy(config)
    return net.eval()


def save_folder(net: nn.Module, config: dict[str, Any], folder: str | Path, *, card: str | None = None,
                overwrite: bool = False) -> Path:
    """Write a prior folder: ``config.json``, ``model.safetensors`` and (if given) ``README.md``.

    Each file is written atomically. An existing non-empty folder is refused unless ``overwrite``;
    with ``overwrite`` only these three files are replaced and nothing else in the folder is touched.

    Returns:
        The folder.
    """
    from safetensors.torch import save_file

    check_config(config)
    folder = Path(folder)
    names = [CONFIG_NAME, WEIGHTS_NAME] + ([CARD_NAME] if card is not None else [])
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} exists and is not a directory")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        clash = [n for n in names if (folder / n).exists()]
        what = f"already holds {', '.join(clash)}" if clash else "is not empty"
        raise FileExistsError(f"{folder} {what}; choose a new --out folder or pass --overwrite "
                              f"(which replaces only {', '.join(names)})")
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(_state_dict_for_saving(net), str(tmp), metadata={"format": "pt"})
    write_text_atomic(folder / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    if card is not None:
        write_text_atomic(folder / CARD_NAME, card)
    return folder


