"""Datamodules: built-in photos, random patches, image folders, HF imagefolder, Gaussian fields."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from priorlab.core.protocols import Denoiser
from priorlab.datamodules import (
    GRAY_PHOTOS,
    TEST_PHOTOS,
    TRAIN_PHOTOS,
    EpochSampler,
    GaussianFieldDataModule,
    ImageFolderDataModule,
    PatchDataset,
    PhotosDataModule,
    dihedral,
    list_photos,
    load_photo,
)
from priorlab.datamodules.patches import patch_loader

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def smooth_image(height: int, width: int, channels: int, seed: int) -> np.ndarray:
    """A uint8 test image with structure (gradients) and texture (noise), no symmetry."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (0.3 * yy / height + 0.5 * xx / width)[..., None] + 0.2 * rng.random((height, width, channels))
    return (np.clip(base, 0, 1) * 255).astype(np.uint8).squeeze(-1 if channels == 1 else ())


def write_png(path: Path, height: int, width: int, channels: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(smooth_image(height, width, channels, seed)).save(path)


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Three PNGs, gray and RGB mixed, one in a subfolder, plus a hidden file that must be ignored."""
    root = tmp_path / "imgs"
    write_png(root / "a.png", 40, 48, 1, 0)
    write_png(root / "b.png", 36, 30, 3, 1)
    write_png(root / "sub" / "c.PNG", 32, 32, 3, 2)
    (root / "._a.png").write_bytes(b"macOS resource fork, not an image")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every Hugging Face cache at tmp_path and forbid network access."""
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets.config
    except ImportError:
        pytest.skip("datasets not installed")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")
    return cache


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


# -- built-in photos ----------------------------------------------------------------------------------

def test_builtin_photo_splits():
    assert len(TRAIN_PHOTOS) == 15 and len(TEST_PHOTOS) == 6
    assert not set(TRAIN_PHOTOS) & set(TEST_PHOTOS)
    assert list_photos("photos") == list(TRAIN_PHOTOS) and list_photos("photos-test") == list(TEST_PHOTOS)
    color_train, color_test = list_photos("photos", 3), list_photos("photos-test", 3)
    assert len(color_train) == 9 and len(color_test) == 3
    assert not (set(color_train) | set(color_test)) & GRAY_PHOTOS
    with pytest.raises(ValueError, match="split"):
        list_photos("photos-val")


@pytest.mark.parametrize("name", TRAIN_PHOTOS + TEST_PHOTOS)
def test_load_photo(name):
    gray, color = load_photo(name, 1), load_photo(name, 3)
    assert gray.dtype == torch.float32 and gray.ndim == 3 and gray.shape[0] == 1
    assert color.shape == (3, *gray.shape[1:]) and min(gray.shape[1:]) >= 256
    assert 0 <= gray.min() and gray.max() <= 1 and gray.std() > 0.02
    replicated = torch.equal(color[0], color[1]) and torch.equal(color[1], color[2])
    assert replicated == (name in GRAY_PHOTOS)
    # gray is ITU-R 601 luma of the color photo, to 8-bit rounding
    luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    assert (gray[0] - luma).abs().max() <= 1.01 / 255


def test_load_photo_returns_fresh_tensor_and_validates():
    x = load_photo("coins", 1)
    x.zero_()
    assert load_photo("coins", 1).max() > 0
    with pytest.raises(ValueError, match="unknown"):
        load_photo("lena")
    with pytest.raises(ValueError, match="channels"):
        load_photo("coins", 2)


# -- patches ------------------------------------------------------------------------------------------

def test_dihedral_group():
    x = torch.arange(12.0).view(1, 3, 4)
    outs = [dihedral(x, k) for k in range(8)]
    assert len({tuple(o.flatten().tolist()) + tuple(o.shape) for o in outs}) == 8
    assert torch.equal(outs[0], x)
    with pytest.raises(ValueError):
        dihedral(x, 8)


def test_patch_dataset_shapes_reproducibility_and_epochs():
    images = [torch.from_numpy(smooth_image(60, 80, 3, s)).permute(2, 0, 1).float() / 255 for s in range(3)]
    ds = PatchDataset(images, patch_size=16, patches_per_epoch=32, seed=5)
    assert len(ds) == 32 and ds.channels == 3
    batch = torch.stack([ds[i] for i in range(32)])
    assert batch.shape == (32, 3, 16, 16) and batch.dtype == torch.float32
    assert batch.min() >= 0 and batch.max() <= 1
    again = PatchDataset(images, patch_size=16, patches_per_epoch=32, seed=5)
    assert torch.equal(batch, torch.stack([again[i] for i in range(32)]))  # same seed: bit for bit
    next_epoch = torch.stack([ds[32 + i] for i in range(32)])  # key = epoch·N + i
    other_seed = PatchDataset(images, patch_size=16, patches_per_epoch=32, seed=6)
    for other in (next_epoch, torch.stack([other_seed[i] for i in range(32)])):
        assert sum(torch.equal(a, b) for a, b in zip(batch, other, strict=True)) == 0
    assert len({tuple(p.flatten()[:20].tolist()) for p in batch}) == 32  # patches differ


def test_patch_dataset_uses_all_dihedral_transforms_and_scales():
    img = torch.from_numpy(smooth_image(16, 16, 1, 0)).float()[None] / 255
    ds = PatchDataset([img], patch_size=16, patches_per_epoch=200, scales=(1.0,), seed=0)
    seen = {tuple(ds[i].flatten().tolist()) for i in range(200)}
    expected = {tuple(dihedral(img, k).flatten().tolist()) for k in range(8)}
    assert seen == expected  # a whole-image patch: exactly the 8 symmetries, all of them drawn
    # at scale 0.5 a 32x32 image becomes the 16x16 patch: its (antialiased) downscaled version
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    ramp = (0.2 + 0.01 * yy + 0.02 * xx)[None]  # bicubic reproduces linear ramps away from the border
    half = PatchDataset([ramp], patch_size=16, patches_per_epoch=8, scales=(0.5,), seed=0)
    target = ramp[:, ::2, ::2] + 0.5 * (0.01 + 0.02)  # sample centers move by half a pixel
    for i in range(8):
        patch = half[i]
        assert any(torch.allclose(patch[:, 2:-2, 2:-2], dihedral(target, k)[:, 2:-2, 2:-2], atol=1e-3)
                   for k in range(8))


def test_patch_dataset_skips_small_sources_and_errors_when_none_remain():
    small, big = torch.rand(1, 20, 20), torch.rand(1, 40, 40)
    ds = PatchDataset([small, big], patch_size=30, patches_per_epoch=4, scales=(1.0, 0.7))
    assert ds.num_skipped == 1 and len(ds.pyramids) == 1 and len(ds.pyramids[0]) == 1  # 40·0.7 = 28 < 30
    with pytest.raises(ValueError, match="30x30"):
        PatchDataset([small], patch_size=30)
    with pytest.raises(ValueError, match="same C"):
        PatchDataset([torch.rand(1, 40, 40), torch.rand(3, 40, 40)], patch_size=8)


def test_patch_loader_epochs_workers_and_ranks():
    images = [torch.rand(1, 40, 40, generator=torch.Generator().manual_seed(s)) for s in range(2)]
    ds = PatchDataset(images, patch_size=8, patches_per_epoch=12, seed=0)
    loader = patch_loader(ds, batch_size=4, num_workers=0)
    epoch0 = torch.cat(list(loader))
    assert epoch0.shape == (12, 1, 8, 8)
    assert torch.equal(epoch0, torch.cat(list(loader)))  # no set_epoch: same epoch again
    loader.sampler.set_epoch(1)
    epoch1 = torch.cat(list(loader))
    assert not torch.equal(epoch0, epoch1)
    # worker processes receive keys and draw nothing themselves: identical patches
    workers = patch_loader(ds, batch_size=4, num_workers=2)
    workers.sampler.set_epoch(1)
    assert torch.equal(torch.cat(list(workers)), epoch1)
    # under DDP Lightning wraps the sampler; ranks get disjoint keys and the epoch is forwarded
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    ranks = [DistributedSamplerWrapper(EpochSampler(12), num_replicas=2, rank=r, shuffle=False)
             for r in (0, 1)]
    for r in ranks:
        r.set_epoch(3)
    keys = [set(r) for r in ranks]
    assert not keys[0] & keys[1] and keys[0] | keys[1] == set(range(36, 48))


class _Recorder(pl.LightningModule):
    """Records the training batches it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[int, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, batch.clone()))
        return (self.w - batch.mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(dm: pl.LightningDataModule, epochs: int = 2) -> list[tuple[int, torch.Tensor]]:
    model = _Recorder()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    return model.seen


def test_trainer_sets_epoch_and_reproduces(photo_folder):
    def make():
        return PhotosDataModule(channels=1, patch_size=16, patches_per_epoch=8, batch_size=4,
                                train_dirs=[str(photo_folder)], val_dirs=[str(photo_folder)])

    seen = _fit(make())
    assert [e for e, _ in seen] == [0, 0, 1, 1]
    assert not torch.equal(seen[0][1], seen[2][1])  # a new epoch draws new patches
    again = _fit(make())  # same seed: the same run
    assert all(torch.equal(a[1], b[1]) for a, b in zip(seen, again, strict=True))


# -- PhotosDataModule ---------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 3])
def test_photos_datamodule_builtin(channels):
    dm = PhotosDataModule(channels=channels, patch_size=32, patches_per_epoch=8, batch_size=4,
                          val_max_size=64)
    assert dm.channels == channels
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (4, channels, 32, 32) and 0 <= batch.min() and batch.max() <= 1
    vals = list(dm.val_dataloader())
    assert len(vals) == len(list_photos("photos-test", channels))
    assert all(v.shape[:2] == (1, channels) and max(v.shape[-2:]) <= 64 for v in vals)
    dm.setup("test")
    tests = list(dm.test_dataloader())
    assert len(tests) == len(vals) and len(list(dm.predict_dataloader())) == len(tests)


def test_photos_datamodule_folders(photo_folder, tmp_path):
    test_folder = tmp_path / "held_out"
    write_png(test_folder / "t.png", 32, 32, 3, 9)
    before = tree(photo_folder)
    for channels in (1, 3):
        dm = PhotosDataModule(channels=channels, patch_size=16, patches_per_epoch=8, batch_size=8,
                              train_dirs=[str(photo_folder)], val_dirs=[str(photo_folder)],
                              test_dirs=[str(test_folder)])
        dm.setup("fit")
        dm.setup("test")
        assert len(dm.train_dataset.pyramids) == 3  # a.png, b.png, sub/c.PNG; hidden and .txt skipped
        assert next(iter(dm.train_dataloader())).shape == (8, channels, 16, 16)
        sizes = [tuple(v.shape) for v in dm.val_dataloader()]
        assert sizes == [(1, channels, 40, 48), (1, channels, 36, 30), (1, channels, 32, 32)]
        assert [tuple(v.shape) for v in dm.test_dataloader()] == [(1, channels, 32, 32)]
    assert tree(photo_folder) == before  # read only
    # the gray PNG read as RGB is replicated; the RGB one read as gray is its luma
    dm3 = PhotosDataModule(channels=3, val_dirs=[str(photo_folder)])
    dm3.setup("validate")
    a_rgb = dm3.val_images[0]
    assert torch.equal(a_rgb[0], a_rgb[2])
    b_gray = PhotosDataModule(channels=1, val_dirs=str(photo_folder))  # a single folder as a string
    b_gray.setup("validate")
    b = dm3.val_images[1]
    luma = 0.299 * b[0] + 0.587 * b[1] + 0.114 * b[2]
    assert (b_gray.val_images[1][0] - luma).abs().max() <= 1.01 / 255


def test_photos_datamodule_adds_folders_to_the_builtin_photos(photo_folder):
    dm = PhotosDataModule(channels=3, patch_size=16, patches_per_epoch=8, batch_size=4,
                          train_dirs=["builtin:photos", str(photo_folder)])
    dm.setup("fit")
    n_builtin = len(list_photos("photos", 3))
    assert len(dm.train_dataset.pyramids) == n_builtin + 3
    dm.setup("validate")  # validation stays on the built-in test split
    assert len(dm.val_images) == len(list_photos("photos-test", 3))
    with pytest.raises(ValueError, match="never be trained on"):  # explicit or default test split
        PhotosDataModule(train_dirs=["builtin:photos-test"])
    with pytest.raises(ValueError, match="never be trained on"):
        PhotosDataModule(test_dirs=["builtin:photos"])
    with pytest.raises(ValueError, match="builtin:photos-test"):
        PhotosDataModule(train_dirs=["builtin:fotos"])


def test_photos_datamodule_takes_single_image_files(photo_folder):
    # one photo named beside a folder: read once, in list order; a non-image file is refused by name
    dm = PhotosDataModule(channels=3, patch_size=16, patches_per_epoch=8, batch_size=4,
                          train_dirs=[str(photo_folder / "sub"), str(photo_folder / "a.png")],
                          val_dirs=[str(photo_folder / "b.png")])
    dm.setup("fit")
    assert len(dm.train_dataset.pyramids) == 2  # sub/c.PNG, a.png
    assert [tuple(v.shape) for v in dm.val_dataloader()] == [(1, 3, 36, 30)]
    with pytest.raises(NotADirectoryError, match="not a folder or an image file.*notes.txt"):
        PhotosDataModule(train_dirs=[str(photo_folder / "notes.txt")])
    with pytest.raises(ValueError, match="never be trained on"):  # a test photo inside a training folder
        PhotosDataModule(train_dirs=[str(photo_folder)], test_dirs=[str(photo_folder / "sub" / "c.PNG")])


def test_photos_datamodule_errors(tmp_path, photo_folder):
    with pytest.raises(FileNotFoundError, match="not found"):
        PhotosDataModule(train_dirs=[str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="channels"):
        PhotosDataModule(channels=2)
    with pytest.raises(ValueError, match="never be trained on"):
        PhotosDataModule(train_dirs=[str(photo_folder)], test_dirs=[str(photo_folder / "sub")])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    dm = PhotosDataModule(train_dirs=[str(empty)])
    with pytest.raises(FileNotFoundError, match="no image files"):
        dm.setup("fit")
    bad = tmp_path / "bad"
    write_png(bad / "good.png", 40, 40, 1, 0)
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    dm = PhotosDataModule(val_dirs=[str(bad)])
    with pytest.raises(OSError, match="broken.png"):
        dm.setup("validate")
    tiny = tmp_path / "tiny"
    write_png(tiny / "t.png", 20, 20, 1, 0)
    with pytest.raises(ValueError, match="50x50"):
        PhotosDataModule(train_dirs=[str(tiny)]).setup("fit")


@pytest.mark.skipif(not (SHARED_DATA / "set12").is_dir(), reason="../shared/data/set12 not present")
def test_photos_datamodule_reads_set12():
    dm = PhotosDataModule(channels=1, val_dirs=[str(SHARED_DATA / "set12")])
    dm.setup("validate")
    images = list(dm.val_dataloader())
    assert len(images) == 12
    assert {tuple(x.shape[-2:]) for x in images} <= {(256, 256), (512, 512)}
    assert all(x.shape[:2] == (1, 1) and 0 <= x.min() and x.max() <= 1 for x in images)


def test_constructor_signatures_parse_as_cli_config(tmp_path):
    """The constructors are the config: jsonargparse (LightningCLI's parser) must read them."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(PhotosDataModule, "photos")
    parser.add_class_arguments(ImageFolderDataModule, "folder")
    parser.add_class_arguments(GaussianFieldDataModule, "gauss")
    cfg = parser.parse_args(["--photos.scales=[1.0, 0.5]", f"--photos.train_dirs=[{tmp_path}]",
                             "--photos.val_max_size=64", f"--folder.path={tmp_path}",
                             "--folder.streaming=true", "--gauss.alpha=1.5"])
    assert tuple(cfg.photos.scales) == (1.0, 0.5) and cfg.photos.train_dirs == [str(tmp_path)]
    assert cfg.folder.val_split == "test" and cfg.folder.streaming is True and cfg.gauss.alpha == 1.5
    dm = PhotosDataModule(**vars(cfg.photos))
    assert dm.scales == (1.0, 0.5)


# -- ImageFolderDataModule (Hugging Face datasets, offline) -------------------------------------------

@pytest.fixture
def imagefolder(tmp_path: Path) -> Path:
    root = tmp_path / "hfimgs"
    for i in range(6):
        write_png(root / "train" / f"tr{i}.png", 40 + 4 * i, 36, 3 if i % 2 else 1, 10 + i)
    for i in range(2):
        write_png(root / "test" / f"te{i}.png", 32, 44, 3, 20 + i)
    return root


def test_imagefolder_datamodule_in_memory(imagefolder, hf_cache):
    before = tree(imagefolder)
    dm = ImageFolderDataModule(str(imagefolder), channels=3, patch_size=16, patches_per_epoch=12,
                               batch_size=4, seed=1)
    assert dm.channels == 3
    dm.prepare_data()
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert [tuple(b.shape) for b in batches] == [(4, 3, 16, 16)] * 3
    assert all(0 <= b.min() and b.max() <= 1 for b in batches)
    assert len(dm.train_dataset.pyramids) == 6
    assert [tuple(v.shape) for v in dm.val_dataloader()] == [(1, 3, 32, 44)] * 2
    assert len(list(dm.test_dataloader())) == 2
    assert tree(imagefolder) == before  # the cache went to HF_DATASETS_CACHE, not the folder
    assert any(hf_cache.rglob("*.arrow"))
    # same seed, fresh datamodule: same patches
    dm2 = ImageFolderDataModule(str(imagefolder), channels=3, patch_size=16, patches_per_epoch=12,
                                batch_size=4, seed=1)
    dm2.setup("fit")
    assert torch.equal(torch.cat(batches), torch.cat(list(dm2.train_dataloader())))


def test_imagefolder_holds_out_validation_when_split_missing(imagefolder, hf_cache):
    def held_out(seed):
        dm = ImageFolderDataModule(str(imagefolder), val_split="validation", val_fraction=0.3, channels=1,
                                   patch_size=16, patches_per_epoch=4, seed=seed)
        dm.setup("fit")
        return dm

    dm = held_out(0)
    assert len(dm.val_images) == 2 and len(dm.train_dataset.pyramids) == 4  # ceil(0.3·6) held out
    train_sources = [p[0] for p in dm.train_dataset.pyramids]
    for v in dm.val_images:
        assert not any(t.shape == v.shape and torch.equal(t, v) for t in train_sources)
    other = held_out(7)  # the hold-out does not depend on the training seed
    assert all(torch.equal(a, b) for a, b in zip(dm.val_images, other.val_images, strict=True))


def test_imagefolder_errors(imagefolder, hf_cache, tmp_path):
    with pytest.raises(FileNotFoundError):
        ImageFolderDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="no split"):
        ImageFolderDataModule(str(imagefolder), train_split="training").setup("fit")
    with pytest.raises(ValueError, match="no column"):
        ImageFolderDataModule(str(imagefolder), image_column="img").setup("fit")
    (imagefolder / "test" / "zz_broken.png").write_bytes(b"not a png at all")
    with pytest.raises(OSError, match="zz_broken.png"):
        ImageFolderDataModule(str(imagefolder), patch_size=16).setup("validate")


def test_imagefolder_streaming(imagefolder, hf_cache):
    def make():
        return ImageFolderDataModule(str(imagefolder), streaming=True, channels=1, patch_size=16,
                                     patches_per_epoch=10, patches_per_image=3, batch_size=4, seed=2)

    dm = make()
    dm.prepare_data()
    dm.setup("fit")
    assert [tuple(v.shape) for v in dm.val_dataloader()] == [(1, 1, 32, 44)] * 2
    loader = dm.train_dataloader()
    epoch0 = list(loader)
    assert [b.shape[0] for b in epoch0] == [4, 4, 2]  # patches_per_epoch bounds the epoch
    assert all(b.shape[1:] == (1, 16, 16) and 0 <= b.min() and b.max() <= 1 for b in epoch0)
    epoch1 = list(loader)
    assert not torch.equal(torch.cat(epoch0), torch.cat(epoch1))  # a new pass draws new patches
    fresh = make()
    fresh.setup("fit")
    assert torch.equal(torch.cat(epoch0), torch.cat(list(fresh.train_dataloader())))  # reproducible


def test_imagefolder_streaming_holds_out_first_images(imagefolder, hf_cache):
    dm = ImageFolderDataModule(str(imagefolder), streaming=True, val_split=None, max_val_images=2, channels=1,
                               patch_size=16, patches_per_epoch=40, patches_per_image=1, shuffle_buffer=0)
    dm.setup("fit")
    assert [tuple(v.shape[-2:]) for v in dm.val_images] == [(40, 36), (44, 36)]  # tr0, tr1
    patches = torch.cat(list(dm.train_dataloader()))
    assert patches.shape == (40, 1, 16, 16)


def test_imagefolder_streaming_never_trains_on_held_out_images(tmp_path, hf_cache):
    # 16 flat images (gray level 10·(k+1)): a patch's value names its image. In a stream of several shards read
    # by several DataLoader workers, holding out by position (skip) trained on held-out images; the held-out
    # ones are now excluded by identity.
    import io

    import datasets

    def png(k: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(np.full((16, 16), 10 * (k + 1), np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    rows = datasets.Dataset.from_dict({"image": [{"bytes": png(k), "path": None} for k in range(16)]})
    rows = rows.cast_column("image", datasets.Image())
    (tmp_path / "unused").mkdir()
    dm = ImageFolderDataModule(str(tmp_path / "unused"), streaming=True, val_split=None, max_val_images=4,
                               channels=1, patch_size=8, patches_per_epoch=256, patches_per_image=1,
                               shuffle_buffer=0, scales=(1.0,), num_workers=2, batch_size=8)
    dm._load = lambda: {"train": rows.to_iterable_dataset(num_shards=4)}  # like a Hub dataset of 4 shards
    dm.setup("fit")
    held = {round(float(v.mean()) * 255) for v in dm.val_images}
    trained = {round(float(v) * 255) for v in torch.cat(list(dm.train_dataloader())).flatten(1).mean(1)}
    assert len(held) == 4 and trained and not held & trained
    assert trained <= {10 * (k + 1) for k in range(16)} - held


# -- GaussianFieldDataModule --------------------------------------------------------------------------

def test_gaussian_datamodule():
    dm = GaussianFieldDataModule(size=8, channels=3, train_samples=10, val_samples=3, batch_size=4, seed=3)
    assert dm.channels == 3 and dm.field.channels == 3 and dm.field.mean == 0.5
    batches = list(dm.train_dataloader())
    assert [tuple(b.shape) for b in batches] == [(4, 3, 8, 8), (4, 3, 8, 8), (2, 3, 8, 8)]
    vals, tests = list(dm.val_dataloader()), list(dm.test_dataloader())
    assert [tuple(v.shape) for v in vals] == [(1, 3, 8, 8)] * 3 and len(tests) == 3
    train_set = dm.train_dataloader().dataset
    same = GaussianFieldDataModule(size=8, channels=3, train_samples=10, val_samples=3, seed=3)
    assert torch.equal(train_set[4], same.train_dataloader().dataset[4])  # deterministic per seed
    assert not torch.equal(vals[0][0], tests[0][0]) and not torch.equal(vals[0][0], train_set[0])
    # every epoch is a reshuffle of the same fixed training set
    all_train = torch.stack([train_set[i] for i in range(10)])
    assert torch.allclose(torch.cat(batches).sum(0), all_train.sum(0), atol=1e-5)
    # exact oracle and density
    assert isinstance(dm.wiener_denoiser, Denoiser)
    y = vals[0] + 0.1 * torch.randn(vals[0].shape, generator=torch.Generator().manual_seed(0))
    x_hat = dm.wiener_denoiser(y, 0.1)
    assert x_hat.shape == y.shape and (x_hat - vals[0]).pow(2).mean() < (y - vals[0]).pow(2).mean()
    assert dm.log_prob(vals[0]).shape == (1,)
    assert torch.isfinite(dm.log_prob(vals[0])).all()


def test_read_image_modes(tmp_path):
    """16-bit gray keeps its precision; palette and RGBA images convert; EXIF rotation is applied."""
    from priorlab.datamodules import read_image

    ramp16 = (np.arange(64 * 32, dtype=np.uint16).reshape(64, 32) * 31).astype(np.uint16)
    Image.fromarray(ramp16).save(tmp_path / "g16.png")
    x = read_image(tmp_path / "g16.png", 1)
    assert x.shape == (1, 64, 32)
    torch.testing.assert_close(x[0], torch.from_numpy(ramp16.astype(np.float32) / 65535))
    assert read_image(tmp_path / "g16.png", 3).shape == (3, 64, 32)

    rgba = np.dstack([smooth_image(20, 30, 3, 0), np.full((20, 30), 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(smooth_image(20, 30, 3, 0)).convert("P").save(tmp_path / "pal.png")
    for name in ("rgba.png", "pal.png"):
        x = read_image(tmp_path / name, 3)
        assert x.shape == (3, 20, 30) and 0 <= x.min() and x.max() <= 1

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.fromarray(smooth_image(20, 30, 1, 0)).save(tmp_path / "rot.jpg", exif=exif)
    assert read_image(tmp_path / "rot.jpg", 1).shape == (1, 30, 20)


def test_predict_names_follow_the_files_and_never_repeat(tmp_path):
    from PIL import Image

    from priorlab.datamodules import PhotosDataModule

    for rel in ("a/01.png", "a/01-2.png", "b/01.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / rel)
    dm = PhotosDataModule(channels=1, test_dirs=[str(tmp_path / "a"), str(tmp_path / "b")])
    names = dm.predict_names()
    assert sorted(names) == sorted(set(names)) and len(names) == 3
    dm.setup("predict")
    assert len(dm.predict_dataloader()) == len(names)
