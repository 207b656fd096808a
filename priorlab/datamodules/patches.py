"""Random training patches and full-image evaluation sets, shared by the image datamodules.

Training follows the BF-DnCNN recipe (algorithms.md §2.6): 50×50 patches from the source images
rescaled by {1, 0.9, 0.8, 0.7} with bicubic interpolation, one random flip/rotation per patch. The
reference extracts every patch at stride 10; here each epoch draws ``patches_per_epoch`` patches at
random instead (uniform image, uniform scale, uniform position, uniform dihedral transform), which
bounds the epoch independently of the data size and gives every image the same weight, so one large
photo does not dominate.

Randomness. Patch number ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: its choices
come from ``numpy.random.default_rng((seed, e, i))``. The epoch travels inside the index: the
:class:`EpochSampler` yields keys ``e·N + i`` (N = patches_per_epoch) and Lightning calls its
``set_epoch`` before every training epoch — also through the ``DistributedSamplerWrapper`` it puts
around it under DDP, which then hands each rank a disjoint set of keys. Hence patches are
reproducible bit for bit for a seed, identical whatever ``num_workers`` (workers receive keys, they
draw nothing from their own RNG state), persistent workers are safe, and a resumed run continues
with the right epoch's patches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

DEFAULT_SCALES = (1.0, 0.9, 0.8, 0.7)


def mix_seed(*keys: int) -> int:
    """A 64-bit seed from non-negative integers, well mixed (numpy ``SeedSequence``).

    Nearby keys such as (0, 0, 1) and (0, 1, 0) give unrelated seeds.
    """
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


def check_patch_args(patch_size: int, patches_per_epoch: int, scales: Sequence[float], batch_size: int,
                     num_workers: int, seed: int, val_max_size: int | None) -> tuple[float, ...]:
    """Validate the patch arguments common to the image datamodules; returns ``scales`` as a tuple."""
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    if patches_per_epoch < 1:
        raise ValueError(f"patches_per_epoch must be >= 1, got {patches_per_epoch}")
    scales = tuple(float(s) for s in scales)
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be a non-empty list of positive factors, got {scales}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if val_max_size is not None and val_max_size < 1:
        raise ValueError(f"val_max_size must be >= 1 or None, got {val_max_size}")
    return scales


def rescale(image: torch.Tensor, scale: float) -> torch.Tensor:
    """Resize a (C, H, W) image by ``scale`` (antialiased bicubic), clamped to [0, 1].

    Bicubic overshoots at edges; the clamp keeps clean patches inside the image range.
    """
    if scale == 1.0:
        return image
    height, width = image.shape[-2:]
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    out = F.interpolate(image[None], size=size, mode="bicubic", antialias=True, align_corners=False)[0]
    return out.clamp_(0.0, 1.0)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Apply one of the 8 symmetries of the square to the last two axes.

    Args:
        x: (..., H, W) tensor.
        k: index 0-7: rotation by (k mod 4)·90° counter-clockwise, preceded by a left-right flip
            when k ≥ 4. k = 0 is the identity.

    Returns:
        The transformed tensor (a view when possible).
    """
    if not 0 <= k < 8:
        raise ValueError(f"dihedral index must be in 0..7, got {k}")
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def build_pyramid(image: torch.Tensor, scales: Sequence[float], patch_size: int) -> list[torch.Tensor]:
    """The rescaled versions of ``image`` that are at least ``patch_size`` pixels on each side."""
    levels = [rescale(image, s) for s in scales]
    return [lv for lv in levels if min(lv.shape[-2:]) >= patch_size]


def random_patch(levels: Sequence[torch.Tensor], rng: np.random.Generator, patch_size: int) -> torch.Tensor:
    """One random patch from a pyramid: uniform scale, position and dihedral transform, (C, p, p)."""
    src = levels[int(rng.integers(len(levels)))]
    top = int(rng.integers(src.shape[-2] - patch_size + 1))
    left = int(rng.integers(src.shape[-1] - patch_size + 1))
    patch = src[:, top:top + patch_size, left:left + patch_size]
    return dihedral(patch, int(rng.integers(8))).contiguous()


class PatchDataset(Dataset):
    """Random square patches of a fixed list of images, a fresh set every epoch.

    Every source image is rescaled once, up front, to each factor in ``scales``; rescaled versions
    smaller than the patch are skipped, and images with no usable version are ignored.

    Args:
        images: source images, each (C, H, W) float in [0, 1], all with the same C.
        patch_size: side p of the square patches in pixels.
        patches_per_epoch: N, the epoch length.
        scales: rescaling factors.
        seed: base seed (≥ 0).

    Item ``key`` (an int; ``key = epoch·N + i``) is a (C, p, p) float32 tensor in [0, 1]; see the
    module docstring for how the epoch gets into the key.
    """

    def __init__(self, images: Sequence[torch.Tensor], patch_size: int = 50, patches_per_epoch: int = 8192,
                 scales: Sequence[float] = DEFAULT_SCALES, seed: int = 0) -> None:
        scales = check_patch_args(patch_size, patches_per_epoch, scales, 1, 0, seed, None)
        if not images:
            raise ValueError("PatchDataset needs at least one source image")
        chans = {int(im.shape[0]) for im in images}
        if len(chans) != 1 or any(im.ndim != 3 for im in images):
            raise ValueError("source images must all be (C, H, W) with the same C, "
                             f"got channels {sorted(chans)}")
        self.patch_size, self.patches_per_epoch = patch_size, patches_per_epoch
        self.scales, self.seed = scales, seed
        self.channels = chans.pop()
        pyramids = (build_pyramid(im.float(), scales, patch_size) for im in images)
        self.pyramids = [pyr for pyr in pyramids if pyr]
        if not self.pyramids:
            smallest = min(images, key=lambda im: min(im.shape[-2:]))
            raise ValueError(
                f"no source image is at least {patch_size}x{patch_size} pixels at any scale in {scales} "
                f"(smallest image {tuple(smallest.shape[-2:])}); use a smaller patch_size or larger images")
        self.num_skipped = len(images) - len(self.pyramids)

    def __len__(self) -> int:
        return self.patches_per_epoch

    def __getitem__(self, key: int) -> torch.Tensor:
        epoch, index = divmod(int(key), self.patches_per_epoch)
        rng = np.random.default_rng((self.seed, epoch, index))
        levels = self.pyramids[int(rng.integers(len(self.pyramids)))]
        return random_patch(levels, rng, self.patch_size)


class EpochSampler(Sampler[int]):
    """Yields the keys ``epoch·N + i`` for i = 0..N−1, in order; Lightning sets the epoch.

    Order does not need shuffling: every item is an independent random draw.

    Args:
        num_items: N, the epoch length.
    """

    def __init__(self, num_items: int) -> None:
        self.num_items = int(num_items)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select which epoch's items to yield (called by Lightning before each epoch)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.num_items
        return iter(range(start, start + self.num_items))

    def __len__(self) -> int:
        return self.num_items


def center_crop(image: torch.Tensor, max_size: int | None) -> torch.Tensor:
    """Crop (C, H, W) to at most ``max_size`` × ``max_size`` around the center (no-op for None)."""
    if max_size is None:
        return image
    height, width = image.shape[-2:]
    h, w = min(height, max_size), min(width, max_size)
    top, left = (height - h) // 2, (width - w) // 2
    return image[..., top:top + h, left:left + w]


class FullImageDataset(Dataset):
    """Whole images for validation and testing, optionally center-cropped.

    Args:
        images: (C, H, W) float tensors in [0, 1]; sizes may differ.
        max_size: crop each image to at most max_size × max_size to bound evaluation cost;
            None keeps full images.
    """

    def __init__(self, images: Sequence[torch.Tensor], max_size: int | None = None) -> None:
        if not images:
            raise ValueError("FullImageDataset needs at least one image")
        self.images = [center_crop(im, max_size).contiguous() for im in images]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def patch_loader(dataset: PatchDataset, batch_size: int, num_workers: int) -> DataLoader:
    """Training loader: batches (B, C, p, p) of clean patches, keyed by :class:`EpochSampler`."""
    return DataLoader(dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset)),
                      num_workers=num_workers, persistent_workers=num_workers > 0)


def full_image_loader(images: Sequence[torch.Tensor], max_size: int | None = None) -> DataLoader:
    """Evaluation loader: one (1, C, H, W) image per batch (images differ in size).

    The images already sit in memory, so worker processes would only add start-up cost.
    """
    return DataLoader(FullImageDataset(images, max_size), batch_size=1, shuffle=False, num_workers=0)
