"""Load a prior by name or path: the one entry point commands and users call (``zoo.load``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from priorlab.zoo.checkpoint import load_checkpoint

# Names of published priors; none is published yet (the model-zoo issue adds them and their loading).
KNOWN_PRIORS: tuple[str, ...] = ()


def load(spec: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """A trained prior in eval mode, from a checkpoint path (or, once published, a prior's name).

    Args:
        spec: path of a priorlab Lightning checkpoint (``.ckpt``), or the name of a published prior.
        map_location: device for the weights.

    Raises:
        FileNotFoundError: a path that does not exist.
        KeyError: an unknown prior name.
    """
    path = Path(spec)
    if path.suffix == ".ckpt" or path.exists() or "/" in str(spec) or "\\" in str(spec):
        return load_checkpoint(path, map_location=map_location)
    known = ", ".join(sorted(KNOWN_PRIORS)) or "none published yet"
    raise KeyError(f"unknown prior {str(spec)!r} (known priors: {known}); pass a checkpoint written by "
                   "`priorlab fit`, e.g. runs/quickstart/version_0/checkpoints/last.ckpt")
