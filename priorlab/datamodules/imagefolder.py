"""Custom image data through Hugging Face ``datasets``: a local image folder or a Hub dataset.

``path`` is either a local folder, read with the packaged ``imagefolder`` builder (layout
``root/train/*.png``, ``root/test/*.png``, …; works offline), or a Hub dataset name. ``datasets`` is
imported inside the methods only, so importing priorlab stays light. The Arrow cache goes to
``cache_dir`` or the standard Hugging Face cache, never into the image folder.

Two modes:

* in memory (default): the images are decoded once into tensors and patched exactly like
  :class:`~priorlab.datamodules.photos.PhotosDataModule` (reproducible per (seed, epoch, index));
* ``streaming=True``: images are decoded on the fly and ``patches_per_image`` random patches are cut
  from each; an epoch ends after ``patches_per_epoch`` patches (summed over ranks and workers), so
  it may cover only part of a large dataset, and each epoch restarts the stream in a new shuffled
  order (shuffle buffer ``shuffle_buffer`` images). The per-epoch randomness comes from the
  DataLoader's seeded generator (a new base seed for each epoch's workers, the same on every rank)
  and from a pass counter, so a run reproduces for a seed. ``datasets`` splits the stream between
  workers by shard (workers beyond the shard count idle: a local folder is often a single shard,
  so keep ``num_workers`` ≤ ``n_shards``) and between DDP ranks by shard or by example.

Validation uses split ``val_split`` when the dataset has it. Otherwise a held-out part of the
training split: a fixed fraction ``val_fraction`` chosen by a permutation with seed 0 (independent
of ``seed``, so changing the training seed never moves images between training and validation);
with streaming, whose length is unknown, the first ``max_val_images`` (default 16) images of the
stream, which training then leaves out wherever they come (by the hash of their bytes, or their
path). Streaming always bounds validation to ``max_val_images`` (default 16) images. Test and predict
use the validation images.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from priorlab.datamodules.images import cell_source, check_channels, pil_to_tensor
from priorlab.datamodules.patches import (
    DEFAULT_SCALES,
    PatchDataset,
    build_pyramid,
    check_patch_args,
    full_image_loader,
    mix_seed,
    patch_loader,
    random_patch,
)

STREAMING_VAL_IMAGES = 16  # held-out stream images when max_val_images is None


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _image_key(value: Any) -> str:
    """Identity of an undecoded image cell (``{"bytes", "path"}``): the sha256 of its bytes, else its path."""
    import hashlib

    if isinstance(value, dict) and value.get("bytes"):
        return hashlib.sha256(value["bytes"]).hexdigest()
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    raise ValueError(f"cannot identify an image cell of type {type(value).__name__}")


def _decode(value: Any, channels: int, where: str) -> torch.Tensor:
    """An image cell (PIL image, or ``{"bytes", "path"}`` when not decoded) to (C, H, W) in [0, 1]."""
    try:
        if isinstance(value, Image.Image):
            return pil_to_tensor(value, channels)
        source = cell_source(value)
        if source is not None:
            with Image.open(source) as image:
                image.load()
                return pil_to_tensor(image, channels)
    except (OSError, SyntaxError, ValueError) as err:
        name = value.get("path") if isinstance(value, dict) else None
        raise OSError(f"cannot decode {where}{f' ({name})' if name else ''}: {err}") from err
    raise TypeError(f"{where} is a {type(value).__name__}, not an image; "
                    "set image_column to the image column")


def _share(total: int, parts: int, part: int) -> int:
    """How many of ``total`` items part ``part`` of ``parts`` gets (an exact partition)."""
    return total // parts + (part < total % parts)


class StreamingPatchDataset(IterableDataset):
    """Random patches cut from a streamed Hugging Face dataset, decoded on the fly.

    Args:
        stream: a ``datasets.IterableDataset`` whose ``image_column`` holds images.
        image_column: the column with the images.
        channels: 1 or 3.
        patch_size: side p of the patches.
        patches_per_epoch: patches per epoch over all ranks and workers (bounds the epoch; rounded up
            to a multiple of the number of DDP ranks).
        patches_per_image: patches cut from each streamed image before moving on.
        scales: rescaling factors (antialiased bicubic).
        seed: base seed (≥ 0).
        shuffle_buffer: images in the stream's shuffle buffer; 0 keeps the stored order.

    Yields (C, p, p) float32 tensors in [0, 1].
    """

    def __init__(self, stream: Any, image_column: str, channels: int, patch_size: int, patches_per_epoch: int,
                 patches_per_image: int, scales: tuple[float, ...], seed: int, shuffle_buffer: int) -> None:
        if patches_per_image < 1:
            raise ValueError(f"patches_per_image must be >= 1, got {patches_per_image}")
        self.stream, self.image_column, self.channels = stream, image_column, channels
        self.patch_size, self.patches_per_epoch = patch_size, patches_per_epoch
        self.patches_per_image = patches_per_image
        self.scales, self.seed, self.shuffle_buffer = scales, seed, shuffle_buffer
        self._passes = 0  # iterations of this copy (the main process's, or a persistent worker's)

    def __len__(self) -> int:
        return self._per_rank()

    def _per_rank(self) -> int:
        # Rounded up, the same on every rank: ranks that ran different numbers of batches would hang.
        return math.ceil(self.patches_per_epoch / _rank_world()[1])

    def __iter__(self):
        from datasets.distributed import split_dataset_by_node

        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # Workers of one epoch share base_seed = info.seed − info.id, drawn from the DataLoader's
        # seeded generator: equal on all ranks, new every epoch.
        base = info.seed - info.id if info else 0
        pass_seed = mix_seed(self.seed, base, self._passes)
        self._passes += 1
        rank, world = _rank_world()
        stream = self.stream
        if self.shuffle_buffer > 0:
            stream = stream.shuffle(seed=pass_seed % 2**32, buffer_size=self.shuffle_buffer)
        if world > 1:
            stream = split_dataset_by_node(stream, rank=rank, world_size=world)
        # datasets hands worker w the shards w, w + workers, …: workers beyond the shard count get
        # nothing, so the epoch's patches are shared among the workers that do get shards.
        active = min(workers, getattr(stream, "n_shards", None) or workers)
        if worker >= active:
            return
        quota = _share(self._per_rank(), active, worker)
        rng = np.random.default_rng((self.seed, pass_seed, rank, worker))
        emitted = 0
        while emitted < quota:
            used = 0
            for k, row in enumerate(stream):
                levels = build_pyramid(_decode(row[self.image_column], self.channels, f"streamed image {k}"),
                                       self.scales, self.patch_size)
                if not levels:
                    continue
                used += 1
                for _ in range(min(self.patches_per_image, quota - emitted)):
                    yield random_patch(levels, rng, self.patch_size)
                    emitted += 1
                if emitted >= quota:
                    return
            if used == 0:  # raise rather than end early: DDP ranks with unequal batch counts hang
                raise ValueError(f"no streamed image (rank {rank}, worker {worker}) is at least "
                                 f"{self.patch_size}x{self.patch_size} pixels at any scale in {self.scales}")


class ImageFolderDataModule(pl.LightningDataModule):
    """Patches of a local image folder or a Hugging Face Hub dataset (see the module docstring).

    Args:
        path: a local folder (``imagefolder`` builder) or a Hub dataset name.
        image_column: the column holding the images.
        train_split: split used for training.
        val_split: split used for validation (and test); if None or absent, hold out part of training.
        val_fraction: fraction of the training split held out when there is no validation split.
        streaming: decode on the fly instead of loading every image into memory.
        cache_dir: Arrow/download cache; None uses the standard Hugging Face cache.
        channels: 1 (gray luma) or 3 (RGB).
        patch_size: side p of the training patches in pixels.
        patches_per_epoch: patches per training epoch (over all DDP ranks).
        scales: rescaling factors of the source images (antialiased bicubic).
        batch_size: training batch size B.
        num_workers: DataLoader worker processes for training.
        seed: base seed of the training patches (≥ 0).
        val_max_size: center-crop validation/test images to at most this size; None keeps them whole.
        max_images: use at most this many training images (the first ones); None uses all.
        max_val_images: use at most this many validation images; None uses all (16 when streaming).
        patches_per_image: streaming only: patches cut from each streamed image.
        shuffle_buffer: streaming only: shuffle buffer size in images (0: stored order).

    Attributes:
        channels: C, as given.
    """

    def __init__(self, path: str, image_column: str = "image", train_split: str = "train",
                 val_split: str | None = "test", val_fraction: float = 0.05, streaming: bool = False,
                 cache_dir: str | None = None, channels: int = 1, patch_size: int = 50,
                 patches_per_epoch: int = 8192, scales: tuple[float, ...] = DEFAULT_SCALES,
                 batch_size: int = 128, num_workers: int = 0, seed: int = 0, val_max_size: int | None = None,
                 max_images: int | None = None, max_val_images: int | None = None,
                 patches_per_image: int = 16, shuffle_buffer: int = 1000) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.scales = check_patch_args(patch_size, patches_per_epoch, scales, batch_size, num_workers, seed,
                                       val_max_size)
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        for name, value in (("max_images", max_images), ("max_val_images", max_val_images)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        local = Path(path).expanduser()
        if not local.exists() and path.startswith(("/", ".", "~")):
            raise FileNotFoundError(f"image folder not found: {local}")
        self.path, self.local = path, local.is_dir()
        self.image_column, self.train_split, self.val_split = image_column, train_split, val_split
        self.val_fraction, self.streaming, self.cache_dir = val_fraction, streaming, cache_dir
        self.patch_size, self.patches_per_epoch, self.batch_size = patch_size, patches_per_epoch, batch_size
        self.num_workers, self.seed, self.val_max_size = num_workers, seed, val_max_size
        self.max_images, self.max_val_images = max_images, max_val_images
        self.patches_per_image, self.shuffle_buffer = patches_per_image, shuffle_buffer
        self.save_hyperparameters()
        self.train_dataset: PatchDataset | StreamingPatchDataset | None = None
        self.val_images: list[torch.Tensor] | None = None

    def _load(self) -> Any:
        import datasets

        if self.local:
            return datasets.load_dataset("imagefolder", data_dir=str(Path(self.path).expanduser().resolve()),
                                         cache_dir=self.cache_dir, streaming=self.streaming)
        return datasets.load_dataset(self.path, cache_dir=self.cache_dir, streaming=self.streaming)

    def _split(self, splits: Any, name: str) -> Any:
        """One split, reduced to the image column, images left undecoded (we decode them ourselves:
        only the ones used, and with the file named in errors)."""
        from datasets import Image as ImageFeature

        if name not in splits:
            raise ValueError(f"dataset {self.path!r} has no split {name!r}; it has {sorted(splits)}")
        split = splits[name]
        features = split.features or {}
        if features and self.image_column not in features:
            raise ValueError(f"split {name!r} has no column {self.image_column!r}; "
                             f"columns: {sorted(features)}")
        if features and not isinstance(features[self.image_column], ImageFeature):
            raise TypeError(f"column {self.image_column!r} holds {features[self.image_column]}, not images; "
                            "set image_column to the image column")
        split = split.select_columns([self.image_column])
        return split.cast_column(self.image_column, ImageFeature(decode=False))

    def _decode_all(self, rows: Any, what: str) -> list[torch.Tensor]:
        col, chans = self.image_column, self.channels
        return [_decode(row[col], chans, f"{what} image {k}") for k, row in enumerate(rows)]

    def prepare_data(self) -> None:
        """Download and build the Arrow cache once (rank 0 only); streaming needs nothing."""
        if not self.streaming:
            self._load()

    def setup(self, stage: str | None = None) -> None:
        """Load the splits and decode the images the stage needs (once)."""
        if self.val_images is not None and (self.train_dataset is not None or stage not in ("fit", None)):
            return
        splits = self._load()
        train = self._split(splits, self.train_split)
        has_val = self.val_split is not None and self.val_split in splits
        if self.streaming:
            self._setup_streaming(splits, train, has_val)
            return
        if has_val:
            val = self._split(splits, self.val_split)
        else:
            # Fixed seed 0, not self.seed: the hold-out must not move when the training seed changes.
            order = np.random.default_rng(0).permutation(len(train))
            n_val = max(1, math.ceil(self.val_fraction * len(train)))
            if n_val >= len(train):
                raise ValueError(f"split {self.train_split!r} has {len(train)} image(s): too few to hold out "
                                 "a validation part; give a val_split")
            val, train = train.select(np.sort(order[:n_val])), train.select(np.sort(order[n_val:]))
        if self.max_images is not None:
            train = train.select(range(min(self.max_images, len(train))))
        if self.max_val_images is not None:
            val = val.select(range(min(self.max_val_images, len(val))))
        self.val_images = self._decode_all(val, "validation")
        if stage in ("fit", None):
            self.train_dataset = PatchDataset(self._decode_all(train, "training"), self.patch_size,
                                              self.patches_per_epoch, self.scales, self.seed)

    def _setup_streaming(self, splits: Any, train: Any, has_val: bool) -> None:
        n_val = self.max_val_images or STREAMING_VAL_IMAGES  # a stream may be endless: always bounded
        if has_val:
            val = self._split(splits, self.val_split).take(n_val)
        else:
            # Held out by identity, not by position: with several shards and DataLoader workers, datasets applies
            # a skip(n) inside each worker's shards, which would train on some held-out images.
            val = list(train.take(n_val))
            col = self.image_column
            held = {_image_key(row[col]) for row in val}
            train = train.filter(lambda row: _image_key(row[col]) not in held)
        if self.max_images is not None:
            train = train.take(self.max_images)
        self.val_images = self._decode_all(val, "validation")
        if not self.val_images:
            raise ValueError(f"no validation images in {self.path!r}")
        self.train_dataset = StreamingPatchDataset(
            train, self.image_column, self.channels, self.patch_size, self.patches_per_epoch,
            self.patches_per_image, self.scales, self.seed, self.shuffle_buffer)

    def train_dataloader(self) -> DataLoader:
        """Batches (B, C, p, p) of clean patches in [0, 1]."""
        if self.train_dataset is None:
            self.setup("fit")
        if isinstance(self.train_dataset, PatchDataset):
            return patch_loader(self.train_dataset, self.batch_size, self.num_workers)
        # The generator's per-epoch base seed is what makes streamed epochs differ reproducibly.
        return DataLoader(self.train_dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        """Single validation images (1, C, H, W)."""
        if self.val_images is None:
            self.setup("validate")
        return full_image_loader(self.val_images, self.val_max_size)

    def test_dataloader(self) -> DataLoader:
        """The validation images, (1, C, H, W) each."""
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """The validation images, (1, C, H, W) each."""
        return self.val_dataloader()
