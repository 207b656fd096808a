"""Lightning datamodules: built-in photos and image folders (random patches), Hugging Face datasets,
and synthetic Gaussian fields with exact densities.

Every datamodule exposes ``channels`` (1 or 3); training batches are clean images (B, C, h, w) in
[0, 1] (the LightningModule adds the noise), validation/test/predict batches are single images
(1, C, H, W).
"""

from priorlab.datamodules.fashion_mnist import FashionMNISTDataModule, load_fashion_mnist
from priorlab.datamodules.gaussian import GaussianFieldDataModule
from priorlab.datamodules.imagefolder import ImageFolderDataModule
from priorlab.datamodules.imagenet import ImageNetDataModule, ImageSet, load_images
from priorlab.datamodules.images import IMAGE_EXTENSIONS, pil_to_tensor, read_image, read_image_folders
from priorlab.datamodules.patches import EpochSampler, FullImageDataset, PatchDataset, dihedral
from priorlab.datamodules.photos import (
    GRAY_PHOTOS,
    TEST_PHOTOS,
    TEST_SPLIT,
    TRAIN_PHOTOS,
    TRAIN_SPLIT,
    PhotosDataModule,
    list_photos,
    load_photo,
)

__all__ = [
    "GRAY_PHOTOS",
    "IMAGE_EXTENSIONS",
    "TEST_PHOTOS",
    "TEST_SPLIT",
    "TRAIN_PHOTOS",
    "TRAIN_SPLIT",
    "EpochSampler",
    "FashionMNISTDataModule",
    "FullImageDataset",
    "GaussianFieldDataModule",
    "ImageFolderDataModule",
    "ImageNetDataModule",
    "ImageSet",
    "PatchDataset",
    "PhotosDataModule",
    "dihedral",
    "list_photos",
    "load_fashion_mnist",
    "load_images",
    "load_photo",
    "pil_to_tensor",
    "read_image",
    "read_image_folders",
]
