"""Downsampled ImageNet and other 8-bit image sets: tiny files in each official format."""

from __future__ import annotations

import importlib.util
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from priorlab.datamodules import ImageNetDataModule, load_images
from priorlab.datamodules.imagenet import read_downsampled_imagenet, to_channels


def _rows(n: int, side: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3 * side * side), dtype=np.uint8)


def test_npz_rows_are_chw_flattened(tmp_path):
    data = _rows(5, 8)
    np.savez(tmp_path / "val_data.npz", data=data, labels=np.arange(5))
    s = load_images(f"npz:{tmp_path / 'val_data.npz'}")
    assert s.images.shape == (5, 3, 8, 8) and s.images.dtype == torch.uint8
    i, c, y, x = 3, 2, 5, 1
    assert s.images[i, c, y, x] == data[i, c * 64 + y * 8 + x]
    assert "imagenet8-new" in s.version and "Chrabaszcz" in s.version and "val_data.npz" in s.version
    assert s.split == "val"
    np.savez(tmp_path / "train_data_batch_1.npz", data=data)
    assert load_images(f"npz:{tmp_path / 'train_data_batch_1.npz'}", split="val").split == "train"  # the file's


def test_train_batches_in_numeric_order_and_limit(tmp_path):
    for k in (1, 2, 10):
        np.savez(tmp_path / f"train_data_batch_{k}.npz", data=_rows(3, 4, seed=k))
    images, files = read_downsampled_imagenet(tmp_path, "train")
    assert images.shape[0] == 9
    assert files == "train_data_batch_1.npz, train_data_batch_2.npz, train_data_batch_10.npz"
    assert torch.equal(images[6:], torch.from_numpy(_rows(3, 4, seed=10)).view(3, 3, 4, 4))
    s = load_images(f"npz:{tmp_path}", split="train", limit=4)
    assert s.images.shape[0] == 4 and "train_data_batch_10" not in s.version


def test_pickled_batch_and_refused_code(tmp_path):
    data = _rows(2, 4)
    with open(tmp_path / "val_data", "wb") as f:
        pickle.dump({"data": data, "labels": [1, 2], "mean": data.mean(0)}, f)
    s = load_images(f"npz:{tmp_path}")
    assert torch.equal(s.images, torch.from_numpy(data).view(2, 3, 4, 4))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil", "wb") as f:
        pickle.dump({"data": Evil()}, f)
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        load_images(f"npz:{tmp_path / 'evil'}")


@pytest.mark.parametrize("data, message", [
    (np.zeros((2, 48), dtype=np.float32), "not 8-bit"),
    (np.zeros((2, 50), dtype=np.uint8), r"3\*r\*r"),
])
def test_bad_npz_files(tmp_path, data, message):
    np.savez(tmp_path / "val_data.npz", data=data)
    with pytest.raises(ValueError, match=message):
        load_images(f"npz:{tmp_path}")


def test_named_imagenet_reads_its_folder_or_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIORLAB_IMAGENET32", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="Imagenet32_val_npz.*npz:PATH"):
        load_images("imagenet32")
    (tmp_path / "in32").mkdir()
    np.savez(tmp_path / "in32" / "val_data.npz", data=_rows(2, 32))
    monkeypatch.setenv("PRIORLAB_IMAGENET32", str(tmp_path / "in32"))
    s = load_images("imagenet32", channels=1)
    assert s.images.shape == (2, 1, 32, 32) and s.version.startswith("imagenet32-new")
    assert "gray" in s.version
    monkeypatch.setenv("PRIORLAB_IMAGENET64", str(tmp_path / "in32"))
    with pytest.raises(ValueError, match="not imagenet64"):
        load_images("imagenet64")


def test_luma_matches_pil():
    rgb = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    ours, note = to_channels(torch.from_numpy(rgb).permute(2, 0, 1)[None], 1)
    assert np.array_equal(ours[0, 0].numpy(), np.asarray(Image.fromarray(rgb).convert("L")))
    assert "luma" in note
    assert to_channels(ours, 3)[0].shape == (1, 3, 6, 5)


def test_folder_native_size_and_box_downsampling(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "val").mkdir()
    big = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "val" / "a.png")
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "val" / "b.png")
    with pytest.raises(ValueError, match="different sizes"):
        load_images(f"folder:{tmp_path}")
    s = load_images(f"folder:{tmp_path}", resolution=4)
    assert s.images.shape == (2, 3, 4, 4) and "PIL BOX" in s.version and "not the official" in s.version
    # center crop 12x12 of the 12x16 image, then 3x3 box averages
    crop = big[:, 2:14].astype(np.float64)
    box = crop.reshape(4, 3, 4, 3, 3).mean(axis=(1, 3))
    assert np.abs(s.images[0].permute(1, 2, 0).numpy() - box).max() <= 1
    with pytest.raises(FileNotFoundError):
        load_images(f"folder:{tmp_path / 'nope'}")


def test_folder_splits_are_read_and_reported_as_they_are(tmp_path):
    rng = np.random.default_rng(4)
    for split, n in (("train", 3), ("test", 2)):
        (tmp_path / split).mkdir()
        for k in range(n):
            Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(tmp_path / split / f"{k}.png")
    s = load_images(f"folder:{tmp_path}", split="val")  # val -> the test/ folder, never the training images
    assert len(s.images) == 2 and s.split == "test"
    assert len(load_images(f"folder:{tmp_path}", split="train").images) == 3
    (tmp_path / "test").rename(tmp_path / "other")
    with pytest.raises(ValueError, match=r"split folders \['train'\] but none for split 'val'"):
        load_images(f"folder:{tmp_path}", split="val")
    s = load_images(f"folder:{tmp_path / 'other'}", split="val")  # a plain folder: all of it
    assert len(s.images) == 2 and s.split == "all (no split folder)"


def test_folder_rejects_16bit_rgb_png(tmp_path):
    # Pillow opens a 48-bit PNG as mode "RGB" and keeps the high bytes; the file's raw mode tells.
    import struct
    import zlib

    h, w = 3, 4
    raw = b"".join(b"\x00" + np.full((w, 3), 3007, ">u2").tobytes() for _ in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    (tmp_path / "deep.png").write_bytes(png)
    assert Image.open(tmp_path / "deep.png").mode == "RGB"
    with pytest.raises(ValueError, match="16 bits per channel"):
        load_images(f"folder:{tmp_path}")
    # The same file in a Hugging Face dataset (which decodes with load(), losing the raw mode): read undecoded.
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"img": [{"bytes": png, "path": None}]}).cast_column("img", datasets.Image())
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(ValueError, match="16 bits per channel"):
        load_images(f"hf:{tmp_path / 'hf'}")


def test_folder_rejects_non_8bit_images(tmp_path):
    Image.fromarray(np.zeros((4, 4), dtype=np.float32), mode="F").save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match="not 8-bit"):
        load_images(f"folder:{tmp_path}")


def test_hf_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(3)
    imgs = [Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)) for _ in range(3)]
    ds = datasets.Dataset.from_dict({"img": imgs, "label": [0, 1, 2]}).cast_column("img", datasets.Image())
    datasets.DatasetDict({"validation": ds}).save_to_disk(str(tmp_path / "hf"))
    s = load_images(f"hf:{tmp_path / 'hf'}", split="val", limit=2)
    assert s.images.shape == (2, 1, 6, 6) and s.split == "validation"
    assert torch.equal(s.images[1, 0], torch.from_numpy(np.array(imgs[1])))
    assert load_images(f"hf:{tmp_path / 'hf'}", resolution=3, channels=3).images.shape == (3, 3, 3, 3)


def test_hf_offline_error_points_to_other_sources():
    pytest.importorskip("datasets")
    with pytest.raises(ValueError, match="cannot load the Hugging Face dataset.*npz:PATH"):
        load_images("hf:someone/certainly-not-cached-imagenet64")


def test_unknown_data_name():
    with pytest.raises(ValueError, match="unknown data 'imagenet128'.*fashion-mnist"):
        load_images("imagenet128")


@pytest.mark.skipif(importlib.util.find_spec("priorlab.datamodules.fashion_mnist") is None,
                    reason="part A's Fashion-MNIST reader not present")
def test_fashion_mnist_version():
    try:
        s = load_images("fashion-mnist", limit=3)
    except FileNotFoundError:
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    assert s.images.shape == (3, 1, 28, 28) and "fashion-mnist" in s.version
    assert s.split == "test (t10k)" and "t10k" in s.version  # --split val reads the test images, and says so


def test_datamodule_flips_shuffles_and_reproduces(tmp_path):
    for split, n in (("train", 6), ("val", 3)):
        np.savez(tmp_path / f"{split}_data{'_batch_1' if split == 'train' else ''}.npz", data=_rows(n, 4, seed=n))
    dm = ImageNetDataModule(f"npz:{tmp_path}", resolution=4, channels=3, batch_size=6, seed=1)
    dm.setup("fit")
    assert "imagenet4-new" in dm.version
    loader = dm.train_dataloader()
    first = next(iter(loader))
    assert first.shape == (6, 3, 4, 4) and first.dtype == torch.float32 and 0 <= first.min() <= first.max() <= 1
    again = next(iter(dm.train_dataloader()))
    assert torch.equal(first, again)  # reproducible for a seed
    source = dm.train_set.images.float() / 255
    flipped = sum(any(torch.equal(b.flip(-1), s) and not torch.equal(b, s) for s in source) for b in first)
    assert 0 < flipped < 6  # some, not all, flipped (seed 1)
    loader.sampler.set_epoch(1)
    assert not torch.equal(next(iter(loader)), first)  # a new epoch reshuffles
    val = next(iter(dm.val_dataloader()))
    assert torch.equal(val, dm.val_set.images.float() / 255)
    with pytest.raises(ValueError, match="not resolution 8"):
        ImageNetDataModule(f"npz:{tmp_path}", resolution=8).setup("validate")
    with pytest.raises(ValueError, match="unknown source"):
        ImageNetDataModule("imagenet")
