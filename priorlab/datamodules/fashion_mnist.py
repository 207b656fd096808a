"""Fashion-MNIST (Xiao et al. 2017): 28×28 gray clothing images, 60,000 train + 10,000 test (t10k).

Sources (ecosystem.md §11.3), all giving the same uint8 pixels:

* the Debian package ``dataset-fashion-mnist``: gzip'd IDX files in /usr/share/datasets/fashion-mnist;
* ``root=``: any folder holding ``train-images-idx3-ubyte.gz`` and ``t10k-images-idx3-ubyte.gz``
  (plain or gzip'd);
* ``source="hf:zalando-datasets/fashion_mnist"``: the Hub dataset through HF ``datasets`` (online or cached).

The test split is never trained on: validation is a held-out slice of train (the *last* ``val_size``
images, fixed), test is t10k. Images are k/255 in [0, 1], the 8-bit data that bits/dim (+8) assumes.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
HF_PREFIX = "hf:"
SPLIT_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
SPLIT_SIZES = {"train": 60_000, "test": 10_000}
IDX3_MAGIC = 0x00000803  # unsigned byte data, 3 dimensions


def read_idx_images(path: str | Path) -> torch.Tensor:
    """Read an IDX3 uint8 image file (gzip'd or plain), e.g. ``train-images-idx3-ubyte.gz``.

    Format: big-endian int32 magic 0x00000803, then N, rows, cols, then N·rows·cols bytes.

    Returns:
        uint8 tensor (N, 1, rows, cols).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an IDX3 uint8 file (magic number), truncated, or trailing data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path} is not a valid gzip file: {err}") from err
    if len(raw) < 16:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, shorter than the 16-byte IDX3 header")
    magic, n, rows, cols = (int(v) for v in np.frombuffer(raw[:16], dtype=">i4"))
    if magic != IDX3_MAGIC:
        raise ValueError(f"{path} has magic number 0x{magic:08x}, expected 0x{IDX3_MAGIC:08x} (IDX3 unsigned "
                         "byte images); is it a labels file or another format?")
    expected = 16 + n * rows * cols
    if len(raw) != expected:
        raise ValueError(f"{path} holds {len(raw)} bytes but its header announces {n} images of {rows}x{cols} "
                         f"({expected} bytes): the file is {'truncated' if len(raw) < expected else 'corrupt'}")
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, 1, rows, cols)
    return torch.from_numpy(pixels.copy())


def _to_float(batch: list[tuple[torch.Tensor]]) -> torch.Tensor:
    """Collate uint8 images into float (B, 1, 28, 28) in [0, 1] (module level: picklable for workers)."""
    return torch.stack([b[0] for b in batch]).float() / 255.0


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{root / (stem + '.gz')} not found; install the Debian package "
                            "(apt-get install dataset-fashion-mnist), pass root= a folder with the IDX files, or "
                            "use source='hf:zalando-datasets/fashion_mnist'")


def _load_hf(name: str, split: str) -> torch.Tensor:
    from datasets import load_dataset  # heavy and optional: imported where used

    ds = load_dataset(name, split=split)
    column = "image" if "image" in ds.column_names else ds.column_names[0]
    arrays = [np.asarray(img.convert("L") if hasattr(img, "convert") else img, dtype=np.uint8) for img in ds[column]]
    return torch.from_numpy(np.stack(arrays)[:, None])


def load_fashion_mnist(split: str, root: str | Path | None = None) -> torch.Tensor:
    """All images of a Fashion-MNIST split as uint8 (N, 1, 28, 28).

    Args:
        split: ``"train"`` (60,000) or ``"test"`` (t10k, 10,000).
        root: folder with the IDX files (default: the Debian package's), or ``"hf:NAME"`` for a Hub dataset.

    Raises:
        ValueError: unknown split, or files that are not 28×28 Fashion-MNIST images.
        FileNotFoundError: the files are missing.
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    if isinstance(root, str) and root.startswith(HF_PREFIX):
        images = _load_hf(root[len(HF_PREFIX):], split)
        where = root
    else:
        folder = Path(root) if root is not None else DEBIAN_ROOT
        path = _find(folder, SPLIT_FILES[split])
        images = read_idx_images(path)
        where = str(path)
    if tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"{where}: expected 28x28 images, got {tuple(images.shape[2:])}")
    return images


class FashionMNISTDataModule(pl.LightningDataModule):
    """Fashion-MNIST as clean float images (B, 1, 28, 28) in [0, 1] (k/255).

    Args:
        root: folder with the IDX files (default: the Debian package's); ignored with ``source``.
        source: ``"hf:NAME"`` to read a Hub dataset instead (e.g. ``hf:zalando-datasets/fashion_mnist``).
        val_size: images held out from the end of train for validation (never trained on).
        train_limit: use only the first N training images (quick CPU runs); ``None`` for all.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size.
        hflip: random horizontal flips of training images.
        num_workers: DataLoader workers for training.
        seed: shuffling seed.

    Attributes:
        channels: 1.
    """

    channels = 1

    def __init__(self, root: str | None = None, source: str | None = None, val_size: int = 2000,
                 train_limit: int | None = None, batch_size: int = 128, eval_batch_size: int = 500,
                 hflip: bool = False, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        if source is not None and not source.startswith(HF_PREFIX):
            raise ValueError(f"source must be 'hf:NAME' (a Hub dataset), got {source!r}; use root= for a folder")
        if val_size < 1 or batch_size < 1 or eval_batch_size < 1 or num_workers < 0:
            raise ValueError("val_size, batch_size and eval_batch_size must be >= 1, num_workers >= 0")
        if train_limit is not None and train_limit < 1:
            raise ValueError(f"train_limit must be >= 1 or None, got {train_limit}")
        self.root, self.source = root, source
        self.val_size, self.train_limit = val_size, train_limit
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.hflip, self.num_workers, self.seed = hflip, num_workers, seed
        self.save_hyperparameters()
        self._splits: dict[str, torch.Tensor] = {}

    def _load(self, split: str) -> torch.Tensor:
        return load_fashion_mnist(split, self.source if self.source else self.root)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and "train" not in self._splits:
            train = self._load("train")
            if self.val_size >= train.shape[0]:
                raise ValueError(f"val_size={self.val_size} leaves no training images (train has {train.shape[0]})")
            self._splits["val"] = train[-self.val_size:]
            rest = train[:-self.val_size]
            self._splits["train"] = rest[: self.train_limit] if self.train_limit else rest
        if stage in (None, "test", "predict") and "test" not in self._splits:
            self._splits["test"] = self._load("test")

    def images(self, split: str) -> torch.Tensor:
        """Float images (N, 1, 28, 28) in [0, 1] of ``train``, ``val`` or ``test`` (after ``setup``)."""
        if split not in self._splits:
            self.setup(None)
        return self._splits[split].float() / 255.0

    def _augment(self, batch: list[tuple[torch.Tensor]]) -> torch.Tensor:
        x = _to_float(batch)
        if self.hflip:
            flip = torch.rand(x.shape[0]) < 0.5
            x[flip] = x[flip].flip(-1)
        return x

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(TensorDataset(self._splits["train"]), batch_size=self.batch_size, shuffle=True,
                          drop_last=True, generator=generator, collate_fn=self._augment,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(TensorDataset(self._splits[split]), batch_size=self.eval_batch_size, shuffle=False,
                          collate_fn=_to_float)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
