"""Load a prior by name, Hub id, folder or checkpoint: the one entry point commands and users call.

``zoo.load`` accepts (timm's conventions, ecosystem.md §3):

* a catalog name, e.g. ``bf-dncnn-small-gray`` (``priorlab zoo list``): bundled priors load from the
  installed package, published ones from the Hub at their pinned revision with their sha256 checked;
* ``hf-hub:ORG/REPO[@REVISION]``: any prior folder on the Hub (or on ``HF_ENDPOINT``);
* ``local-dir:PATH``: a prior folder written by ``priorlab export``;
* a path to a Lightning checkpoint (``.ckpt``) written by ``priorlab fit`` (EMA weights).

A bare string that contains ``/`` or ``:`` and is not an existing checkpoint is rejected with a hint
at the prefixes, so a name is never mistaken for a path or a repository.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from priorlab.zoo.artifact import WEIGHTS_NAME, load_folder, sha256_file
from priorlab.zoo.catalog import PriorEntry, get_prior
from priorlab.zoo.checkpoint import load_checkpoint

HUB_PREFIX = "hf-hub:"
DIR_PREFIX = "local-dir:"


def resolve_folder(entry: PriorEntry, *, local_files_only: bool = False, force_download: bool = False,
                   cache_dir: str | Path | None = None) -> Path:
    """The folder holding a catalog prior: inside the package, or downloaded into the HF cache."""
    if entry.bundled is not None:
        folder = entry.bundled_path()
        if not folder.is_dir():
            raise FileNotFoundError(f"bundled prior {entry.name} is missing from the installation ({folder}); "
                                    "reinstall priorlab")
        return folder
    from priorlab.zoo.hub import download_prior

    return download_prior(entry.hub_repo, revision=entry.revision, expected_sha256=entry.sha256,
                          local_files_only=local_files_only, force_download=force_download, cache_dir=cache_dir,
                          name=entry.name)


def check_device(device: str | torch.device) -> torch.device:
    """The device, or a ValueError that says what to use instead when this machine does not have it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r} ({err}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(device)!r} asked for, but torch sees no CUDA GPU on this machine; use cpu "
                             "(on the command line: --device cpu)")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {str(device)!r} asked for, but torch sees {count} CUDA GPU(s) "
                             f"(cuda:0 … cuda:{count - 1})")
    return dev


def load(spec: str | Path, *, map_location: str | torch.device = "cpu", revision: str | None = None,
         cache_dir: str | Path | None = None, local_files_only: bool = False) -> nn.Module:
    """A trained prior in eval mode, with its config attached as ``prior_config``.

    Args:
        spec: catalog name, ``hf-hub:ORG/REPO[@REVISION]``, ``local-dir:PATH`` or a ``.ckpt`` path.
        map_location: device for the weights.
        revision: Hub revision for ``hf-hub:`` (overrides ``@REVISION``).
        cache_dir: Hugging Face cache folder (default: ``HF_HUB_CACHE``).
        local_files_only: never download; use the cache (also implied by ``HF_HUB_OFFLINE=1``).

    Raises:
        KeyError: unknown catalog name (closest names listed).
        FileNotFoundError: missing path or file.
        ValueError: malformed spec, corrupt file, hash mismatch, keys that do not match, or a device that
            this machine does not have.
        priorlab.zoo.hub.HubError: the Hub could not serve the files.
    """
    net, weights = _load(spec, map_location=map_location, revision=revision, cache_dir=cache_dir,
                         local_files_only=local_files_only)
    # Which bytes were loaded, for records that must name the exact model (logp's JSON): the sha256 of the
    # checkpoint file or of the folder's model.safetensors. Kept off prior_config, which exports copy.
    net.weights_file = str(weights)
    net.weights_sha256 = sha256_file(weights)
    return net


def _load(spec: str | Path, *, map_location, revision, cache_dir, local_files_only) -> tuple[nn.Module, Path]:
    check_device(map_location)
    text = str(spec)
    if isinstance(spec, Path) or text.endswith(".ckpt"):
        return load_checkpoint(Path(spec), map_location=map_location), Path(spec)
    if text.startswith(DIR_PREFIX):
        folder = Path(text[len(DIR_PREFIX):]).expanduser()
        return load_folder(folder, map_location=map_location), folder / WEIGHTS_NAME
    if text.startswith(HUB_PREFIX):
        from priorlab.zoo.hub import download_prior, parse_hub_source

        source = parse_hub_source(text)
        folder = download_prior(source.repo_id, revision=revision or source.revision, cache_dir=cache_dir,
                                local_files_only=local_files_only)
        net = load_folder(folder, map_location=map_location)
        net.prior_config["source"] = f"{HUB_PREFIX}{source.repo_id}@{folder.name}"
        return net, folder / WEIGHTS_NAME
    if "/" in text or ":" in text or "\\" in text:
        path = Path(text)
        if path.is_file():
            return load_checkpoint(path, map_location=map_location), path
        if path.is_dir():
            raise ValueError(f"{text!r} is a folder; load a prior folder with 'local-dir:{text}'")
        raise FileNotFoundError(f"{text!r} is neither a prior name nor an existing file. For a checkpoint give "
                                f"its path (.ckpt); for a Hub repository write 'hf-hub:{text}'; for a folder "
                                f"'local-dir:{text}'")
    entry = get_prior(text)
    folder = resolve_folder(entry, local_files_only=local_files_only, cache_dir=cache_dir)
    net = load_folder(folder, map_location=map_location, expected_sha256=entry.sha256)
    net.prior_config["source"] = entry.name if entry.bundled else f"{HUB_PREFIX}{entry.hub_repo}@{entry.revision}"
    return net, folder / WEIGHTS_NAME


def init_from(net: nn.Module, spec: str | Path) -> nn.Module:
    """Copy a trained prior's weights into ``net`` (fine-tuning); the architectures must match exactly.

    Args:
        net: a network built by the zoo (it carries ``arch_config``).
        spec: anything :func:`load` accepts (name, ``hf-hub:``, ``local-dir:``, ``.ckpt``).

    Returns:
        ``net``, with the prior's weights.
    """
    source = load(spec)
    if source.arch_config != net.arch_config:
        raise ValueError(f"init_from={spec} holds {source.arch_config}, but this module builds "
                         f"{net.arch_config}; set model.arch/arch_args/in_chans to match")
    net.load_state_dict(source.state_dict(), strict=True)
    return net
