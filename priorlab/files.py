"""Atomic output files: write to a temporary file beside the target, then rename over it.

A reader never sees a half-written file and an interrupted write leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path`` (parents are created).

    The file gets the usual permissions (0666 minus the umask) rather than mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def refuse_to_replace(*paths: str | Path | None, overwrite: bool = False, flag: str = "--overwrite") -> None:
    """Stop before any work when an output already exists (``None`` entries are skipped).

    Raises:
        SystemExit: naming the first existing path and the flag that allows replacing it (for scripts and
            commands: the message is the whole error, no traceback).
    """
    if overwrite:
        return
    for path in paths:
        if path is not None and Path(path).exists():
            raise SystemExit(f"{path} exists; pass {flag} to replace it (nothing was written)")


def write_image(x, path: str | Path) -> Path:
    """Write a (C, H, W) tensor in [0, 1] as an 8-bit image, atomically (temporary file, then rename)."""
    import numpy as np
    import torch
    from PIL import Image

    path = Path(path)
    arr = (x.detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    img = Image.fromarray(arr[0] if arr.shape[0] == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0)))
    with atomic_path(path) as tmp:
        img.save(tmp, format=None if path.suffix else "PNG")
    return path
