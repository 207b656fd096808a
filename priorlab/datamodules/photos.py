"""Built-in photos (bundled inside installed wheels) and the patch datamodule that trains on them.

The photos are read at run time from packages that priorlab already depends on; none is copied
into this repository (ecosystem.md §11.1):

* split ``"photos"`` (training, 15): scikit-image astronaut, coffee, chelsea, rocket,
  hubble_deep_field, retina, immunohistochemistry, stereo_motorcycle (left and right views),
  brick, grass, gravel, moon, coins, clock;
* split ``"photos-test"`` (6, never trained on): camera (scikit-image), ascent and aero
  (PyWavelets), china and flower (scikit-learn), grace_hopper (matplotlib).

Gray is ITU-R 601-2 luma as PIL ``convert("L")`` computes it (see ``images.py``). Nine photos are
gray only (brick, grass, gravel, moon, coins, clock, camera, ascent, aero): ``load_photo`` replicates
them to R = G = B when asked for 3 channels, but the color splits (``list_photos(split, channels=3)``)
leave them out, so a color prior trains and is evaluated on real color only (9 train, 3 test
photos). Training on replicated gray would be harmless but teaches nothing about color.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from priorlab.datamodules.images import (
    array_to_tensor,
    check_channels,
    check_folders,
    list_image_files,
    read_image_folders,
)
from priorlab.datamodules.patches import (
    DEFAULT_SCALES,
    PatchDataset,
    check_patch_args,
    full_image_loader,
    patch_loader,
)

TRAIN_SPLIT = "photos"
TEST_SPLIT = "photos-test"

TRAIN_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry",
    "stereo_motorcycle_left", "stereo_motorcycle_right", "brick", "grass", "gravel", "moon", "coins", "clock",
)
TEST_PHOTOS = ("camera", "ascent", "aero", "china", "flower", "grace_hopper")
GRAY_PHOTOS = frozenset({"brick", "grass", "gravel", "moon", "coins", "clock", "camera", "ascent", "aero"})
PHOTO_SPLITS: dict[str, tuple[str, ...]] = {TRAIN_SPLIT: TRAIN_PHOTOS, TEST_SPLIT: TEST_PHOTOS}


# -- loaders: each returns a uint8 array (H, W) or (H, W, 3); heavy imports stay inside ----------------

def _skimage(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


def _stereo(view: int) -> np.ndarray:
    from skimage import data

    return data.stereo_motorcycle()[view]  # (left, right, disparity)


def _pywt(name: str) -> np.ndarray:
    import pywt.data

    return getattr(pywt.data, name)()


def _sklearn(filename: str) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return load_sample_image(filename)


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f, Image.open(f) as image:
        return np.asarray(image.convert("RGB"))


_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    **{n: functools.partial(_skimage, n) for n in TRAIN_PHOTOS if not n.startswith("stereo")},
    "stereo_motorcycle_left": functools.partial(_stereo, 0),
    "stereo_motorcycle_right": functools.partial(_stereo, 1),
    "camera": functools.partial(_skimage, "camera"),
    "ascent": functools.partial(_pywt, "ascent"),
    "aero": functools.partial(_pywt, "aero"),
    "china": functools.partial(_sklearn, "china.jpg"),
    "flower": functools.partial(_sklearn, "flower.jpg"),
    "grace_hopper": _grace_hopper,
}


def _photo_array(name: str) -> np.ndarray:
    array = np.ascontiguousarray(_LOADERS[name]())
    if array.dtype != np.uint8:
        raise TypeError(f"built-in photo {name!r} has dtype {array.dtype}, expected uint8")
    return array


def list_photos(split: str, channels: int | None = None) -> list[str]:
    """Names of the built-in photos of a split.

    Args:
        split: ``"photos"`` (training) or ``"photos-test"``.
        channels: 3 leaves out the gray-only photos; 1 or None lists all.

    Returns:
        Photo names in a fixed order.
    """
    if split not in PHOTO_SPLITS:
        raise ValueError(f"unknown photo split {split!r}; choose from {sorted(PHOTO_SPLITS)}")
    names = PHOTO_SPLITS[split]
    if channels is not None and check_channels(channels) == 3:
        names = tuple(n for n in names if n not in GRAY_PHOTOS)
    return list(names)


def load_photo(name: str, channels: int = 1) -> torch.Tensor:
    """Load a built-in photo.

    Args:
        name: one of :data:`TRAIN_PHOTOS` or :data:`TEST_PHOTOS`.
        channels: 1 for gray luma, 3 for RGB (gray-only photos are replicated to 3 channels).

    Returns:
        A new (C, H, W) float32 tensor in [0, 1] (safe to modify).
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown built-in photo {name!r}; available: {', '.join(sorted(_LOADERS))}")
    return _photo_tensor(name, check_channels(channels)).clone()


@functools.cache
def _photo_tensor(name: str, channels: int) -> torch.Tensor:
    # Cached per process (all photos: about 35 MB gray, 60 MB color): decoding, the first import of
    # sklearn/matplotlib and the conversion of the 2-Mpx retina take about a second in all. Callers
    # get clones, so nobody can modify the cached copy.
    return array_to_tensor(_photo_array(name), channels)


BUILTIN_PREFIX = "builtin:"


def _sources(dirs: list[str] | None, default_split: str) -> tuple[list[str], list[str]]:
    """Split a folder list into built-in splits (``builtin:<split>`` entries) and real folders.

    None (no folders given) is the default built-in split alone.
    """
    if not dirs:
        return [default_split], []
    splits, folders = [], []
    for d in dirs:
        if str(d).startswith(BUILTIN_PREFIX):
            split = str(d)[len(BUILTIN_PREFIX):]
            if split not in PHOTO_SPLITS:
                raise ValueError(f"unknown built-in split {d!r}; use one of "
                                 f"{', '.join(BUILTIN_PREFIX + k for k in PHOTO_SPLITS)} or a folder path")
            splits.append(split)
        else:
            folders.append(d)
    return splits, folders


def _dir_list(dirs: list[str] | str | None) -> list[str] | None:
    """Accept a single folder where a list is expected (handy on the command line)."""
    if dirs is None:
        return None
    return [dirs] if isinstance(dirs, str) else list(dirs)


class PhotosDataModule(pl.LightningDataModule):
    """Random patches of photos for training; whole photos, one per batch, for validation and test.

    With no folders it uses the built-in photos: split ``"photos"`` for training, ``"photos-test"``
    for validation, test and predict. Folders replace them per role (e.g. BSD400 for training, Set12
    for validation, BSD68 for test); they are searched recursively for .png/.jpg/.jpeg/.bmp/.tif/.tiff
    files and only read. An entry ``builtin:photos`` (or ``builtin:photos-test``) in a list stands
    for that built-in split, so folders can be added to the built-in photos, e.g.
    ``train_dirs: [builtin:photos, /usr/share/backgrounds/mate/nature]``. An image file in a list stands
    for itself (one photo of a folder that holds the same photo at several resolutions).

    Training batches are clean patches (B, C, p, p) in [0, 1] (the LightningModule adds noise);
    validation/test/predict batches are single images (1, C, H, W). See ``patches.py`` for how the
    patches are drawn and seeded.

    Args:
        channels: 1 (gray luma) or 3 (RGB). Linked to the model's input channels by the CLI.
        patch_size: side p of the training patches in pixels.
        patches_per_epoch: patches drawn per training epoch (over all DDP ranks).
        scales: rescaling factors of the source images (antialiased bicubic), chosen uniformly.
        batch_size: training batch size B.
        num_workers: DataLoader worker processes for training.
        train_dirs: folders of training images (or ``builtin:<split>``, or single image files); None uses the
            built-in ``"photos"``.
        val_dirs: folders of validation images; None uses the built-in ``"photos-test"``.
        test_dirs: folders of test (and predict) images; None uses the built-in ``"photos-test"``.
        val_max_size: center-crop validation/test images to at most this size; None keeps them whole.
        seed: base seed of the training patches (≥ 0).

    Attributes:
        channels: C, as given.
    """

    def __init__(self, channels: int = 1, patch_size: int = 50, patches_per_epoch: int = 8192,
                 scales: tuple[float, ...] = DEFAULT_SCALES, batch_size: int = 128, num_workers: int = 0,
                 train_dirs: list[str] | None = None, val_dirs: list[str] | None = None,
                 test_dirs: list[str] | None = None, val_max_size: int | None = None, seed: int = 0) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.scales = check_patch_args(patch_size, patches_per_epoch, scales, batch_size, num_workers, seed,
                                       val_max_size)
        self.patch_size, self.patches_per_epoch = patch_size, patches_per_epoch
        self.batch_size, self.num_workers = batch_size, num_workers
        self.seed, self.val_max_size = seed, val_max_size
        self.train_dirs, self.val_dirs, self.test_dirs = map(_dir_list, (train_dirs, val_dirs, test_dirs))
        # Fail at construction (before the Trainer starts) on a mistyped folder or split.
        sources = {role: _sources(d, default) for role, d, default in
                   (("train", self.train_dirs, TRAIN_SPLIT), ("val", self.val_dirs, TEST_SPLIT),
                    ("test", self.test_dirs, TEST_SPLIT))}
        checked = {role: check_folders(folders) if folders else [] for role, (_, folders) in sources.items()}
        for split in set(sources["train"][0]) & set(sources["test"][0]):
            raise ValueError(f"the built-in split {split!r} is used for training and for testing: test images "
                             "must never be trained on")
        for test_dir in checked["test"]:
            for train_dir in checked["train"]:
                if test_dir == train_dir or train_dir in test_dir.parents or test_dir in train_dir.parents:
                    raise ValueError(f"test folder {test_dir} overlaps training folder {train_dir}: "
                                     "test images must never be trained on")
        self.save_hyperparameters()
        self.train_dataset: PatchDataset | None = None
        self.val_images: list[torch.Tensor] | None = None
        self.test_images: list[torch.Tensor] | None = None

    def _images(self, dirs: list[str] | None, split: str) -> list[torch.Tensor]:
        splits, folders = _sources(dirs, split)
        images = [load_photo(name, self.channels) for s in splits for name in list_photos(s, self.channels)]
        return images + (read_image_folders(folders, self.channels) if folders else [])

    def setup(self, stage: str | None = None) -> None:
        """Read the images the stage needs (once; later calls reuse them)."""
        if stage in ("fit", None) and self.train_dataset is None:
            self.train_dataset = PatchDataset(self._images(self.train_dirs, TRAIN_SPLIT), self.patch_size,
                                              self.patches_per_epoch, self.scales, self.seed)
        if stage in ("fit", "validate", None) and self.val_images is None:
            self.val_images = self._images(self.val_dirs, TEST_SPLIT)
        if stage in ("test", "predict", None) and self.test_images is None:
            self.test_images = self._images(self.test_dirs, TEST_SPLIT)

    def train_dataloader(self) -> DataLoader:
        """Batches (B, C, p, p) of clean patches in [0, 1]."""
        if self.train_dataset is None:
            self.setup("fit")
        return patch_loader(self.train_dataset, self.batch_size, self.num_workers)

    def val_dataloader(self) -> DataLoader:
        """Single validation images (1, C, H, W)."""
        if self.val_images is None:
            self.setup("validate")
        return full_image_loader(self.val_images, self.val_max_size)

    def test_dataloader(self) -> DataLoader:
        """Single test images (1, C, H, W)."""
        if self.test_images is None:
            self.setup("test")
        return full_image_loader(self.test_images, self.val_max_size)

    def predict_dataloader(self) -> DataLoader:
        """The test images, whole (``val_max_size`` does not crop them), (1, C, H, W) each."""
        if self.test_images is None:
            self.setup("predict")
        return full_image_loader(self.test_images, None)

    def predict_names(self) -> list[str]:
        """Names of the predict (= test) images, in loader order: built-in photo names, then the files' stems."""
        splits, folders = _sources(self.test_dirs, TEST_SPLIT)
        names = [name for s in splits for name in list_photos(s, self.channels)]
        names += [p.stem for p in list_image_files(folders)] if folders else []
        used: set[str] = set()
        for i, name in enumerate(names):  # 01.png in two folders: 01, 01-2 (never a name already taken)
            unique, k = name, 1
            while unique in used:
                k += 1
                unique = f"{name}-{k}"
            used.add(unique)
            names[i] = unique
        return names
