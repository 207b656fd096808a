"""Reading images into the (C, H, W) float [0, 1] contract: arrays, PIL images and image folders.

One conversion serves every source (built-in photos, folders, Hugging Face datasets), so gray
means the same thing everywhere: PIL's ``convert("L")``, i.e. ITU-R 601-2 luma
L = 0.299 R + 0.587 G + 0.114 B rounded to 8 bits — the same values as a gray PNG saved by any
PIL-based tool. A gray source requested with 3 channels is replicated to R = G = B. Alpha is
dropped. 16-bit gray files keep their 16-bit precision.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File suffixes read from image folders (case-insensitive)."""

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def check_channels(channels: int) -> int:
    """Validate a channel count: 1 (gray) or 3 (RGB)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (gray) or 3 (RGB), got {channels!r}")
    return channels


def pil_to_tensor(image: Image.Image, channels: int) -> torch.Tensor:
    """Convert a PIL image to a float tensor in [0, 1].

    Applies the EXIF orientation (camera JPEGs store rotated pixels plus a flag), then converts to
    gray luma (ITU-R 601-2, PIL ``"L"``) or RGB.

    Args:
        image: any PIL image.
        channels: 1 for gray, 3 for RGB.

    Returns:
        (C, H, W) float32 tensor in [0, 1].
    """
    check_channels(channels)
    image = ImageOps.exif_transpose(image)
    if image.mode == "F":  # 32-bit float: no fixed white level, and convert() would clip it (and NaN) silently
        raise ValueError("a 32-bit float image (PIL mode 'F') has no defined value range; save it as an 8- or "
                         "16-bit PNG/TIFF")
    if image.mode in _SIXTEEN_BIT_MODES:
        # convert("L") would clip 16-bit values at 255 instead of rescaling them.
        gray = np.asarray(image, dtype=np.float32) / 65535.0
        x = torch.from_numpy(np.clip(gray, 0.0, 1.0))[None]
        return x.expand(channels, -1, -1).contiguous()
    arr = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    x = torch.from_numpy(arr.copy()).to(torch.float32) / 255.0
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1).contiguous()


def array_to_tensor(array: np.ndarray, channels: int) -> torch.Tensor:
    """Convert a uint8 (H, W) or (H, W, 3|4) array to a (C, H, W) float tensor in [0, 1].

    Goes through PIL so that gray conversion is identical to :func:`pil_to_tensor`.
    """
    if array.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image array, got {array.dtype}")
    return pil_to_tensor(Image.fromarray(array), channels)


def cell_source(cell: object) -> io.BytesIO | str | None:
    """What ``PIL.Image.open`` reads for an undecoded Hugging Face image cell ``{"bytes", "path"}``: its bytes,
    else its path; None for anything else."""
    if not isinstance(cell, dict):
        return None
    if cell.get("bytes"):
        return io.BytesIO(cell["bytes"])
    return cell.get("path") or None


def read_image(path: str | Path, channels: int) -> torch.Tensor:
    """Read one image file as a (C, H, W) float tensor in [0, 1].

    Raises:
        OSError: the file cannot be opened or decoded (the message names the file).
    """
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here and not later
            return pil_to_tensor(image, channels)
    except (OSError, SyntaxError, ValueError) as err:
        raise OSError(f"cannot read image file {path}: {err}") from err


def check_folders(dirs: str | Sequence[str]) -> list[Path]:
    """Validate image folders (or single image files) without reading them (cheap, for constructors).

    Args:
        dirs: one folder or a list of folders; an image file (by its extension) stands for itself.

    Returns:
        The folders and files as absolute paths.

    Raises:
        FileNotFoundError: a folder or file does not exist.
        NotADirectoryError: a path is neither a folder nor an image file.
    """
    paths = [Path(dirs)] if isinstance(dirs, str | Path) else [Path(d) for d in dirs]
    if not paths:
        raise ValueError("empty list of image folders")
    out = []
    for p in paths:
        p = p.expanduser()
        if not p.exists():
            raise FileNotFoundError(f"image folder not found: {p}")
        if not (p.is_dir() or (p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)):
            raise NotADirectoryError(f"not a folder or an image file ({', '.join(IMAGE_EXTENSIONS)}): {p}")
        out.append(p.resolve())
    return out


def list_image_files(dirs: str | Sequence[str]) -> list[Path]:
    """All image files under the folders, recursively, in a stable sorted order.

    Hidden files and folders (names starting with ".", e.g. macOS ``._x.png`` resource forks or
    ``.ipynb_checkpoints``) are skipped. An image file given in place of a folder is taken as it is
    (e.g. one resolution of a wallpaper package that ships the same photo at several).

    Raises:
        FileNotFoundError: a folder is missing or holds no image file.
    """
    files: list[Path] = []
    for folder in check_folders(dirs):
        if folder.is_file():
            files.append(folder)
            continue
        found = sorted(
            p for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not found:
            raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
        files.extend(found)
    return files


def read_image_folders(dirs: str | Sequence[str], channels: int) -> list[torch.Tensor]:
    """Read every image under the folders (read-only; nothing is written there).

    Args:
        dirs: one folder or a list of folders, searched recursively.
        channels: 1 (gray luma) or 3 (RGB).

    Returns:
        List of (C, H, W) float32 tensors in [0, 1], in :func:`list_image_files` order.
    """
    check_channels(channels)
    return [read_image(p, channels) for p in list_image_files(dirs)]
