"""Downsampled ImageNet (64×64, 32×32) and other fixed-size 8-bit image sets, each with its version.

Log-likelihoods are comparable only within one version of a dataset (ecosystem.md §8.3): the "old"
van den Oord 2016 downsampling and the "new" Chrabaszcz et al. 2017 box resize differ by ~0.25
bits/dim. Every set loaded here carries a ``version`` string that results must record.

Sources (the ``data`` argument of :func:`load_images`, the ``source`` of :class:`ImageNetDataModule`):

* ``npz:PATH`` — the official downsampled ImageNet of Chrabaszcz et al. 2017: ``val_data.npz``,
  ``train_data_batch_1.npz`` … (key ``data``: uint8 (N, 3·r·r), CHW-flattened), or the pickled
  variant (same names without ``.npz``; read with an unpickler that only rebuilds numpy arrays).
  PATH is one file or the folder holding them.
* ``imagenet64`` / ``imagenet32`` — those files in ``$PRIORLAB_IMAGENET64`` / ``$PRIORLAB_IMAGENET32``
  or ``~/.cache/priorlab/imagenet64`` / ``imagenet32``. They are not obtainable offline; the error
  says where to get them.
* ``folder:PATH`` — image files (recursively; ``PATH/<split>`` if that folder exists). With a
  ``resolution`` each image is center-cropped to a square and box-filtered (PIL ``Image.BOX``, the
  area average) to r×r — a third version, not comparable with either official one. Without a
  resolution the images are used at their size, which must be the same for all.
* ``hf:NAME`` — a Hugging Face dataset by Hub name (cached, or downloaded when online) or a local
  folder written by ``Dataset.save_to_disk``; the first image column is used.
* ``fashion-mnist`` — the Debian package's idx files through
  :func:`priorlab.datamodules.fashion_mnist.load_fashion_mnist`.

Images stay uint8 (N, C, H, W) until used, so 50k ImageNet64 images take 600 MB, not 2.4 GB.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from priorlab.datamodules.images import cell_source, check_channels, list_image_files
from priorlab.datamodules.patches import EpochSampler

NAMED_DATA = ("imagenet64", "imagenet32", "fashion-mnist")
SOURCE_PREFIXES = ("npz:", "folder:", "hf:")
CHRABASZCZ_URL = "https://image-net.org/download-images.php (Downsampled ImageNet 64x64 / 32x32, npz)"


@dataclass(frozen=True)
class ImageSet:
    """A fixed-size 8-bit image set.

    Attributes:
        images: (N, C, H, W) uint8.
        version: what the images are (dataset, downsampling, files, channel conversion); results
            computed on different versions must not be compared.
        source: the ``data`` string it was loaded from.
        split: the split that was read.
    """

    images: torch.Tensor
    version: str
    source: str
    split: str


# -- channel conversion ----------------------------------------------------------------------------


def to_channels(images: torch.Tensor, channels: int) -> tuple[torch.Tensor, str]:
    """Convert uint8 (N, C, H, W) images to 1 or 3 channels; returns the images and a note ("" if none).

    RGB → gray is PIL's ``convert("L")`` luma (ITU-R 601-2) in its exact fixed-point form,
    L = (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16, so it matches :mod:`priorlab.datamodules.images`.
    """
    check_channels(channels)
    c = images.shape[1]
    if c == channels:
        return images, ""
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous(), "gray replicated to RGB"
    if c == 3 and channels == 1:
        rgb = images.to(torch.int32)
        luma = (19595 * rgb[:, 0] + 38470 * rgb[:, 1] + 7471 * rgb[:, 2] + 0x8000) >> 16
        return luma.to(torch.uint8)[:, None], "converted to gray (ITU-R 601-2 luma)"
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")


# -- official downsampled ImageNet (Chrabaszcz et al. 2017) ----------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists and numpy arrays only: a data file cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _read_batch(path: Path) -> np.ndarray:
    """The ``data`` array of one npz or pickled batch file."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                if "data" not in f.files:
                    raise ValueError(f"{path} has no 'data' array (keys: {f.files}); expected a downsampled "
                                     "ImageNet batch with 'data' uint8 (N, 3*r*r)")
                return f["data"]
        with open(path, "rb") as fh:
            obj = _ArrayUnpickler(fh, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, KeyError) as err:
        if isinstance(err, ValueError) and "no 'data' array" in str(err):
            raise
        what = "an .npz archive" if path.suffix == ".npz" else "a pickled batch (train_data_batch_N / val_data)"
        detail = str(err) if "refusing to load" in str(err) else type(err).__name__  # ours, or a library's advice
        raise ValueError(f"cannot read {path} as a downsampled ImageNet batch: not {what} ({detail})") from err
    if not isinstance(obj, dict) or "data" not in obj:
        raise ValueError(f"{path} is not a downsampled ImageNet batch (a dict with 'data')")
    return np.asarray(obj["data"])


def _batch_files(root: Path, split: str) -> list[Path]:
    prefix = {"val": "val_data", "validation": "val_data", "test": "val_data", "train": "train_data"}.get(split)
    if prefix is None:
        raise ValueError(f"downsampled ImageNet has splits 'train' and 'val', not {split!r}")
    files = [p for p in root.iterdir() if p.is_file() and p.name.startswith(prefix) and p.suffix in ("", ".npz")]
    # train_data_batch_1 … _10 in numeric order; an npz beats a pickle of the same batch.
    by_stem: dict[str, Path] = {}
    for p in sorted(files, key=lambda q: q.suffix != ".npz"):
        by_stem.setdefault(p.stem if p.suffix else p.name, p)
    return sorted(by_stem.values(), key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])


def read_downsampled_imagenet(path: str | Path, split: str = "val", limit: int | None = None
                              ) -> tuple[torch.Tensor, str]:
    """Images of the official downsampled ImageNet files.

    Args:
        path: a batch file (``val_data.npz``, ``train_data_batch_1`` …) or the folder holding them.
        split: ``"val"`` or ``"train"`` when ``path`` is a folder.
        limit: read at most this many images (only the batches needed are opened).

    Returns:
        uint8 (N, 3, r, r) images and the names of the files read.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"downsampled ImageNet files not found: {path}")
    files = _batch_files(path, split) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no {split} batch files (val_data.npz, train_data_batch_N[.npz]) in {path}")
    arrays, count = [], 0
    for f in files:
        data = _read_batch(f)
        if data.dtype != np.uint8:
            raise ValueError(f"{f}: 'data' is {data.dtype}, not 8-bit (uint8) images")
        if data.ndim != 2 or data.shape[1] % 3 or math.isqrt(data.shape[1] // 3) ** 2 != data.shape[1] // 3:
            raise ValueError(f"{f}: 'data' has shape {data.shape}; expected (N, 3*r*r) CHW-flattened rows")
        arrays.append(data[: None if limit is None else limit - count])
        count += len(arrays[-1])
        if limit is not None and count >= limit:
            break
    sizes = {a.shape[1] for a in arrays}
    if len(sizes) != 1:
        raise ValueError(f"batch files of different resolutions in {path}")
    side = math.isqrt(sizes.pop() // 3)
    images = torch.from_numpy(np.concatenate(arrays).reshape(-1, 3, side, side))
    return images, ", ".join(f.name for f in files[:len(arrays)])


# -- image folders and Hugging Face datasets ----------------------------------------------------------


def box_downsample(image: Any, resolution: int) -> Any:
    """Center-crop a PIL image to a square and box-filter (area average) it to resolution²."""
    from PIL import Image

    w, h = image.size
    s = min(w, h)
    if s < resolution:
        raise ValueError(f"a {w}x{h} image is smaller than the resolution {resolution}: box resizing only "
                         "downsamples (give a resolution of at most the images' smaller side)")
    left, top = (w - s) // 2, (h - s) // 2
    image = image.crop((left, top, left + s, top + s))
    return image if s == resolution else image.resize((resolution, resolution), Image.BOX)


def _pil_to_uint8(image: Any, resolution: int | None, where: str) -> np.ndarray:
    from PIL import ImageOps

    # Pillow opens 16-bit RGB files (PNG, TIFF) as mode "RGB" and keeps the high byte: only the raw mode of
    # the file, known before the pixels are decoded, says so.
    if any(";16" in str(getattr(tile, "args", "")) for tile in getattr(image, "tile", None) or []):
        raise ValueError(f"{where} has 16 bits per channel, not 8-bit data (log-probabilities in bits/dim assume "
                         "256 levels): convert it to an 8-bit PNG")
    image = ImageOps.exif_transpose(image)
    if image.mode not in ("L", "RGB", "RGBA", "LA", "P", "1"):
        raise ValueError(f"{where} is a {image.mode!r} image, not 8-bit gray or RGB data (log-probabilities in "
                         "bits/dim assume 256 levels): convert it to an 8-bit PNG")
    image = image.convert("L" if image.mode in ("L", "LA", "1") else "RGB")
    if resolution is not None:
        image = box_downsample(image, resolution)
    arr = np.asarray(image, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _stack(arrays: list[np.ndarray], what: str) -> torch.Tensor:
    if not arrays:
        raise ValueError(f"no images in {what}")
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images in {what} have different sizes {sorted(shapes)[:4]}…; give a resolution to "
                         "center-crop and box-downsample them to one size")
    chans = max(a.shape[0] for a in arrays)
    return torch.from_numpy(np.stack([np.repeat(a, chans // a.shape[0], 0) for a in arrays]))


# A folder split may be named by any of its aliases; the tree is read whole only when it has no split folders.
FOLDER_SPLIT_ALIASES = {"val": ["validation", "valid", "test"], "validation": ["val", "valid", "test"],
                        "test": ["val", "validation", "valid"]}
ALL_FOLDER_SPLITS = {"train", "val", "validation", "valid", "test"}


def read_image_folder(path: str | Path, split: str | None = None, limit: int | None = None,
                      resolution: int | None = None) -> tuple[torch.Tensor, str]:
    """uint8 images of a folder: ``path/split`` (or an alias: val, validation, valid, test) when it exists,
    else the whole tree when it has no split folders; returns the images and the folder read."""
    from PIL import Image

    root = Path(path).expanduser()
    if root.is_file():
        raise NotADirectoryError(f"{root} is a file; folder: takes a folder of images")
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    for name in [split] + FOLDER_SPLIT_ALIASES.get(split, []) if split else []:
        if (root / name).is_dir():
            root = root / name
            break
    else:
        present = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name in ALL_FOLDER_SPLITS)
        if split and present:
            raise ValueError(f"{root} has split folders {present} but none for split {split!r}; choose one with "
                             "--split, or point folder: at the folder of the images to read")
    files = list_image_files(root)[:limit]
    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                arrays.append(_pil_to_uint8(im, resolution, str(f)))
        except OSError as err:
            raise ValueError(f"cannot read image file {f}: {err}") from err
    return _stack(arrays, str(root)), str(root)


def _open_cell(cell: dict[str, Any], resolution: int | None, where: str) -> np.ndarray:
    """An undecoded image cell ({"bytes", "path"}) of a Hugging Face dataset as uint8 (C, H, W)."""
    from PIL import Image

    source = cell_source(cell)
    if source is None:
        raise ValueError(f"{where} has neither bytes nor a path")
    try:
        with Image.open(source) as image:
            return _pil_to_uint8(image, resolution, where)
    except OSError as err:
        raise ValueError(f"cannot read {where}: {err}") from err


def read_hf_dataset(name: str, split: str = "val", limit: int | None = None, resolution: int | None = None,
                    cache_dir: str | None = None) -> tuple[torch.Tensor, str]:
    """uint8 images of a Hugging Face dataset (Hub name or ``save_to_disk`` folder); returns images and split."""
    import datasets

    local = Path(name).expanduser()
    try:
        if local.is_dir():
            ds = datasets.load_from_disk(str(local))
        else:
            ds = datasets.load_dataset(name, cache_dir=cache_dir)
    except (FileNotFoundError, ConnectionError, OSError, ValueError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        hint = (" (offline mode is on: download it once online, e.g. `python -c \"import datasets; "
                f"datasets.load_dataset('{name}')\"`, or save it with Dataset.save_to_disk and pass "
                "hf:/path/to/folder)" if offline else "")
        raise ValueError(f"cannot load the Hugging Face dataset {name!r}: {err}{hint}; other sources: "
                         "npz:PATH (official downsampled ImageNet files), folder:PATH (image files)") from err
    if isinstance(ds, datasets.DatasetDict):
        candidates = [split] + {"val": ["validation", "test"], "validation": ["val"], "test": ["validation"]}.get(
            split, [])
        chosen = next((s for s in candidates if s in ds), None)
        if chosen is None:
            raise ValueError(f"dataset {name!r} has no split {split!r}; it has {sorted(ds)}")
        ds, split = ds[chosen], chosen
    column = next((k for k, f in ds.features.items() if isinstance(f, datasets.Image)), None)
    if column is None:
        raise ValueError(f"dataset {name!r} has no image column (columns: {sorted(ds.features)})")
    # Undecoded: datasets decodes with PIL's load(), after which a 16-bit file's raw mode is no longer known.
    ds = ds.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    arrays = [_open_cell(row[column], resolution, f"{name} image {k}") for k, row in enumerate(ds)]
    return _stack(arrays, f"{name} [{split}]"), split


# -- one entry point ----------------------------------------------------------------------------------


def _named_imagenet(name: str) -> Path:
    res = name.removeprefix("imagenet")
    env = f"PRIORLAB_IMAGENET{res}"
    root = Path(os.environ.get(env, Path.home() / ".cache" / "priorlab" / name)).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"{name}: no downsampled ImageNet files at {root}. Download Imagenet{res}_val_npz (and _train_npz) "
            f"from {CHRABASZCZ_URL}, unpack them there or set ${env}; or pass --data npz:PATH, "
            "hf:NAME (a Hub copy) or folder:PATH (full-size images, box-downsampled with --resolution)")
    return root


def load_images(data: str, *, split: str = "val", limit: int | None = None, channels: int | None = None,
                resolution: int | None = None, cache_dir: str | None = None) -> ImageSet:
    """Load an 8-bit image set by name or source string (see the module docstring).

    Args:
        data: ``imagenet64``, ``imagenet32``, ``fashion-mnist``, ``npz:PATH``, ``folder:PATH`` or ``hf:NAME``.
        split: ``val`` (or ``test``) or ``train``.
        limit: at most this many images (the first ones).
        channels: convert to 1 (gray luma) or 3 (RGB); None keeps the source's channels.
        resolution: ``folder:``/``hf:`` only: center-crop and box-downsample to this size.
        cache_dir: Hugging Face cache for ``hf:``.

    Returns:
        An :class:`ImageSet` with uint8 images and the version string.

    Raises:
        ValueError: unknown name, unreadable or non-8-bit data, mismatching sizes.
        FileNotFoundError: missing files.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if resolution is not None and resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    if resolution is not None and not data.startswith(("folder:", "hf:")):
        raise ValueError(f"a resolution applies to folder: and hf: data (center crop + box downsampling), not to "
                         f"{data}, whose images have a fixed size")
    if data in ("imagenet64", "imagenet32") or data.startswith("npz:"):
        root = _named_imagenet(data) if not data.startswith("npz:") else Path(data[4:])
        images, files = read_downsampled_imagenet(root, split, limit)
        if root.is_file():  # one batch file: its name says which split it is, not --split
            split = ("val" if root.name.startswith("val_data") else "train" if root.name.startswith("train_data")
                     else root.name)
        if data.startswith("imagenet") and images.shape[-1] != int(data[8:]):
            raise ValueError(f"{root} holds {images.shape[-1]}x{images.shape[-1]} images, not {data}")
        version = f"imagenet{images.shape[-1]}-new (Chrabaszcz et al. 2017 box resize, official files: {files})"
    elif data == "fashion-mnist":
        try:
            from priorlab.datamodules.fashion_mnist import load_fashion_mnist
        except ImportError as err:
            raise ValueError("fashion-mnist needs priorlab.datamodules.fashion_mnist (not in this install)") from err
        part = "test" if split in ("val", "validation", "test") else split
        images = load_fashion_mnist(part)[:limit]
        split = "test (t10k)" if part == "test" else part
        version = (f"fashion-mnist {split} (Zalando, idx files of the Debian package dataset-fashion-mnist, "
                   "28x28 gray)")
    elif data.startswith("folder:"):
        images, where = read_image_folder(data[7:], split, limit, resolution)
        split = Path(where).name if Path(where).name in ALL_FOLDER_SPLITS else "all (no split folder)"
        how = (f"center crop to square, PIL BOX (area) resize to {resolution}x{resolution}; not the official "
               "downsampled ImageNet files") if resolution else "native size"
        version = f"image folder {where} ({how})"
    elif data.startswith("hf:"):
        images, split = read_hf_dataset(data[3:], split, limit, resolution, cache_dir)
        how = f", center crop + PIL BOX resize to {resolution}x{resolution}" if resolution else ""
        version = f"Hugging Face dataset {data[3:]} [{split}]{how}"
    else:
        raise ValueError(f"unknown data {data!r}: use one of {', '.join(NAMED_DATA)}, or npz:PATH, folder:PATH, "
                         "hf:NAME")
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"{data}: expected uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
    if len(images) == 0:
        raise ValueError(f"{data} ({split}) holds no images")
    if channels is not None:
        images, note = to_channels(images, channels)
        version += f", {note}" if note else ""
    return ImageSet(images.contiguous(), version, data, split)


# -- Lightning datamodule -------------------------------------------------------------------------------


class _FlipDataset(Dataset):
    """Whole uint8 images → float [0, 1]; key = epoch·N + i gives a fresh shuffle and flips per epoch.

    Item ``key`` is image perm_epoch[i], flipped left-right with probability ½, both drawn from
    (seed, epoch[, i]), so batches reproduce bit for bit whatever the number of workers.
    """

    def __init__(self, images: torch.Tensor, hflip: bool, seed: int) -> None:
        self.images, self.hflip, self.seed = images, hflip, seed
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, key: int) -> torch.Tensor:
        epoch, i = divmod(int(key), len(self))
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng((self.seed, epoch)).permutation(len(self)))
        x = self.images[int(self._perm[1][i])].to(torch.float32) / 255.0
        if self.hflip and np.random.default_rng((self.seed, epoch, i)).random() < 0.5:
            x = x.flip(-1)
        return x


class ImageNetDataModule(pl.LightningDataModule):
    """Whole downsampled images (B, C, r, r) in [0, 1] for training energy models and denoisers.

    Args:
        source: any ``data`` string of :func:`load_images` (``imagenet64``, ``npz:PATH``, ``folder:PATH``,
            ``hf:NAME``, ``fashion-mnist``).
        resolution: r; the official files must already be r×r; folders and Hub datasets are
            center-cropped and box-downsampled to it.
        channels: 1 (gray luma) or 3 (RGB).
        batch_size: B.
        num_workers: DataLoader workers for training.
        hflip: random left-right flips of training images (the dual score matching recipe).
        train_split: split for training.
        val_split: split for validation and test.
        max_train_images: use the first images only (None: all).
        max_val_images: use the first validation images only (None: all).
        seed: seed of the shuffling and flips (≥ 0).

    Attributes:
        channels: C.
        version: the training set's version string (after :meth:`setup`).
    """

    def __init__(self, source: str, resolution: int = 64, channels: int = 3, batch_size: int = 128,
                 num_workers: int = 0, hflip: bool = True, train_split: str = "train", val_split: str = "val",
                 max_train_images: int | None = None, max_val_images: int | None = 1024, seed: int = 0) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        if resolution < 1 or batch_size < 1 or num_workers < 0 or seed < 0:
            raise ValueError("resolution and batch_size must be >= 1, num_workers and seed >= 0")
        if not (source in NAMED_DATA or source.startswith(SOURCE_PREFIXES)):
            raise ValueError(f"unknown source {source!r}: use one of {', '.join(NAMED_DATA)}, or npz:PATH, "
                             "folder:PATH, hf:NAME")
        self.source, self.resolution, self.batch_size = source, resolution, batch_size
        self.num_workers, self.hflip, self.seed = num_workers, hflip, seed
        self.train_split, self.val_split = train_split, val_split
        self.max_train_images, self.max_val_images = max_train_images, max_val_images
        self.save_hyperparameters()
        self.train_set: ImageSet | None = None
        self.val_set: ImageSet | None = None
        self.version = ""

    def _load(self, split: str, limit: int | None) -> ImageSet:
        resize = self.resolution if self.source.startswith(("folder:", "hf:")) else None
        s = load_images(self.source, split=split, limit=limit, channels=self.channels, resolution=resize)
        if tuple(s.images.shape[-2:]) != (self.resolution, self.resolution):
            raise ValueError(f"{self.source} [{split}] has {s.images.shape[-2]}x{s.images.shape[-1]} images, "
                             f"not resolution {self.resolution}")
        return s

    def setup(self, stage: str | None = None) -> None:
        """Load the validation split (and the training split when fitting), once."""
        if self.val_set is None:
            self.val_set = self._load(self.val_split, self.max_val_images)
        if stage in ("fit", None) and self.train_set is None:
            self.train_set = self._load(self.train_split, self.max_train_images)
            self.version = self.train_set.version

    def train_dataloader(self) -> DataLoader:
        """Batches (B, C, r, r) float32 in [0, 1], reshuffled and re-flipped every epoch."""
        if self.train_set is None:
            self.setup("fit")
        ds = _FlipDataset(self.train_set.images, self.hflip, self.seed)
        return DataLoader(ds, batch_size=self.batch_size, sampler=EpochSampler(len(ds)),
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        """Batches (B, C, r, r) of the validation images, in order, not flipped."""
        if self.val_set is None:
            self.setup("validate")
        images = self.val_set.images.to(torch.float32) / 255.0
        return DataLoader(images, batch_size=self.batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The validation batches."""
        return self.val_dataloader()

