"""Fashion-MNIST from IDX files (tiny files in the official format; the Debian package when installed)."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from priorlab.datamodules import FashionMNISTDataModule, load_fashion_mnist
from priorlab.datamodules.fashion_mnist import DEBIAN_ROOT, read_idx_images


def write_idx(path: Path, images: np.ndarray, *, magic: int = 0x00000803, truncate: int = 0) -> Path:
    """Write uint8 images (N, H, W) as an IDX3 file (gzip'd when the name ends in .gz)."""
    n, h, w = images.shape
    raw = struct.pack(">iiii", magic, n, h, w) + images.astype(np.uint8).tobytes()
    raw = raw[: len(raw) - truncate]
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def tiny_fashion_mnist(root: Path, n_train: int = 40, n_test: int = 12, size: int = 28, seed: int = 0) -> Path:
    """A folder with train/t10k image files of random 8-bit images; train image i has pixel (0, 0) = i."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    train = rng.integers(0, 256, (n_train, size, size), dtype=np.uint8)
    train[:, 0, 0] = np.arange(n_train)
    write_idx(root / "train-images-idx3-ubyte.gz", train)
    write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, size, size), dtype=np.uint8))
    return root


def test_load_reads_idx_files_exactly(tmp_path):
    root = tiny_fashion_mnist(tmp_path)
    train = load_fashion_mnist("train", root)
    assert train.dtype == torch.uint8 and train.shape == (40, 1, 28, 28)
    assert train[:, 0, 0, 0].tolist() == list(range(40))
    assert load_fashion_mnist("test", str(root)).shape == (12, 1, 28, 28)
    plain = write_idx(tmp_path / "plain-idx3-ubyte", train[:, 0].numpy())
    torch.testing.assert_close(read_idx_images(plain), train)


def test_bad_files_get_clear_errors(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="magic number 0x00000801"):
        read_idx_images(write_idx(tmp_path / "labels.gz", images, magic=0x00000801))
    with pytest.raises(ValueError, match="truncated"):
        read_idx_images(write_idx(tmp_path / "short.gz", images, truncate=5))
    with pytest.raises(ValueError, match="truncated"):
        read_idx_images(write_idx(tmp_path / "header.gz", images, truncate=3 * 784 + 4))
    (tmp_path / "notgzip.gz").write_bytes(b"not a gzip file at all")
    with pytest.raises(ValueError, match="gzip"):
        read_idx_images(tmp_path / "notgzip.gz")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist("train", tmp_path / "empty")
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation", tmp_path)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    write_idx(wrong / "train-images-idx3-ubyte.gz", np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="28x28"):
        load_fashion_mnist("train", wrong)


def test_datamodule_holds_out_validation_from_train_and_tests_on_t10k(tmp_path):
    root = tiny_fashion_mnist(tmp_path)
    dm = FashionMNISTDataModule(root=str(root), val_size=10, batch_size=8, eval_batch_size=4, hflip=True)
    dm.setup("fit")
    dm.setup("test")
    ids = {s: set((dm.images(s)[:, 0, 0, 0] * 255).round().long().tolist()) for s in ("train", "val")}
    assert ids["val"] == set(range(30, 40)) and ids["train"] == set(range(30))  # disjoint, val = end of train
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (8, 1, 28, 28) and batch.dtype == torch.float32
    assert torch.equal((batch * 255).round(), batch * 255) and 0 <= batch.min() and batch.max() <= 1
    assert next(iter(dm.val_dataloader())).shape == (4, 1, 28, 28)
    torch.testing.assert_close(next(iter(dm.test_dataloader())), load_fashion_mnist("test", root)[:4].float() / 255)
    limited = FashionMNISTDataModule(root=str(root), val_size=10, train_limit=5)
    limited.setup("fit")
    assert limited.images("train").shape[0] == 5
    with pytest.raises(ValueError, match="hf:"):
        FashionMNISTDataModule(source="zalando-datasets/fashion_mnist")
    with pytest.raises(ValueError, match="val_size"):
        FashionMNISTDataModule(root=str(root), val_size=40).setup("fit")


def tiny_hub_fashion_mnist(root: Path, n_train: int = 12, n_test: int = 3) -> Path:
    """A Hub-layout dataset (data/{split}-00000-of-00001.parquet, columns image + label, as
    zalando-datasets/fashion_mnist); train image i has pixel (0, 0) = i."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(1)
    (root / "data").mkdir(parents=True)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n)
        ds = datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in images], "label": list(range(n))},
                                        features=features)
        ds.to_parquet(root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def test_hub_layout_dataset_loads_like_the_idx_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    root = tiny_hub_fashion_mnist(tmp_path / "fm")
    test = load_fashion_mnist("test", f"hf:{root}")
    assert test.dtype == torch.uint8 and test.shape == (3, 1, 28, 28) and test[:, 0, 0, 0].tolist() == [0, 1, 2]
    dm = FashionMNISTDataModule(source=f"hf:{root}", val_size=4, batch_size=4)
    dm.setup("fit")
    assert set((dm.images("val")[:, 0, 0, 0] * 255).round().long().tolist()) == set(range(8, 12))
    assert dm.images("train").shape == (8, 1, 28, 28)


@pytest.mark.skipif(not (DEBIAN_ROOT / "t10k-images-idx3-ubyte.gz").is_file(), reason="dataset-fashion-mnist absent")
def test_debian_package_files():
    test = load_fashion_mnist("test")
    assert test.shape == (10_000, 1, 28, 28) and test.dtype == torch.uint8
    assert 60 < test.float().mean() < 90  # mean pixel ≈ 73 (0.286 of 255)
