"""File I/O of the commands: reading images, guarding outputs (images are written by priorlab.files.write_image)."""

from __future__ import annotations

import sys
from pathlib import Path


def read_image(path: str | Path, *, convert: str = "none", what: str = "input image"):
    """Read an image file as a (C, H, W) float tensor in [0, 1], keeping its channel count.

    Gray files (8- or 16-bit) give 1 channel, color files 3 (alpha dropped, palettes expanded).
    ``convert`` = ``gray`` (ITU-R 601 luma) or ``rgb`` forces the channel count.
    """
    from PIL import Image, UnidentifiedImageError

    from priorlab.datamodules.images import read_image as read_file

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with Image.open(path) as im:
            native = 1 if im.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") else 3
        return read_file(path, {"gray": 1, "rgb": 3}.get(convert, native))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read {path} as an image ({err}); use PNG, JPEG, TIFF or BMP") from err
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def check_output(path: Path, inputs: list[Path], overwrite: bool) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the output a file name, e.g. {path / 'out.png'}")
    for p in inputs:
        if p.exists() and path.exists() and path.resolve() == p.resolve():
            raise ValueError(f"refusing to write the output over the input file {p}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    if path.suffix.lower() not in ("", ".png", ".tif", ".tiff", ".bmp"):
        raise ValueError(f"write outputs as lossless PNG/TIFF/BMP, not {path.suffix!r}")


SSIM_WINDOW = 11  # torchmetrics' default Gaussian window: images must be at least this wide and high


def ssim_score(img, ref) -> float | None:
    """SSIM of (1, C, H, W) images in [0, 1] (torchmetrics, Gaussian window 11, σ 1.5); None for images
    smaller than the window, where SSIM is not defined."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    if min(img.shape[-2:]) < SSIM_WINDOW:
        return None
    return float(structural_similarity_index_measure(img, ref, data_range=1.0))


def format_ssim(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def progress_interval() -> float:
    """Seconds between progress-bar redraws: tqdm's 0.1 s on a terminal, 5 s when stderr is a file or a
    pipe, so that logs of long runs (nohup, CI) get a line every few seconds, not one per step."""
    return 0.1 if sys.stderr.isatty() else 5.0
