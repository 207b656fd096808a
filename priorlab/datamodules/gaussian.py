"""Synthetic stationary Gaussian images (spectrum ∝ 1/|f|^α) with exact density and optimal denoiser.

A learned denoiser trained here can be compared against the exact answers: the Wiener denoiser
(the MMSE optimum, ``wiener_denoiser``), the exact log-density (``log_prob``) and the exact MMSE
(``field.mmse(σ)``). See :mod:`priorlab.core.gaussian_field`.

The images have mean ``mean`` (0.5, mid-gray) and per-pixel variance ``variance`` (0.01, a std of
0.1), so most pixels fall inside [0, 1]; values outside are kept (about 1 pixel in 1.7 million at
the defaults, 5 standard deviations), because clipping would break the exact formulas.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from priorlab.core.gaussian_field import GaussianField
from priorlab.datamodules.images import check_channels
from priorlab.datamodules.patches import mix_seed

_TRAIN, _VAL, _TEST = 0, 1, 2  # independent sample streams from one seed


class GaussianFieldDataset(Dataset):
    """A fixed, finite set of field samples, each generated on demand from its own seed.

    Sample ``i`` of stream ``s`` is ``field.sample(1, Generator(mix_seed(seed, s, i)))``: the
    dataset is the same in every epoch, worker and process, and costs no memory.

    Args:
        field: the Gaussian field to sample.
        num_samples: dataset length.
        seed: base seed (≥ 0).
        stream: which independent stream (train 0, validation 1, test 2).
    """

    def __init__(self, field: GaussianField, num_samples: int, seed: int = 0, stream: int = _TRAIN) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.field, self.num_samples, self.seed, self.stream = field, num_samples, seed, stream

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.stream, index))
        return self.field.sample(1, generator)[0]


class GaussianFieldDataModule(pl.LightningDataModule):
    """Training and evaluation images drawn from a :class:`GaussianField`.

    Training batches are (B, C, size, size); validation and test batches are single images
    (1, C, size, size), like the photo datamodules. Training, validation and test samples come from
    independent streams of the same seed.

    Args:
        size: image side in pixels (square, periodic boundary).
        alpha: spectral exponent α (power spectrum ∝ 1/|f|^α; 2 is natural-image-like).
        variance: per-pixel variance, [0, 1]² units.
        mean: mean of every pixel (values may leave [0, 1]; they are not clipped).
        channels: 1 or 3 independent channels.
        train_samples: size of the (fixed) training set.
        val_samples: number of validation images, and of test images.
        batch_size: training batch size B.
        num_workers: DataLoader worker processes for training.
        seed: base seed (≥ 0).

    Attributes:
        channels: C, as given.
        field: the :class:`GaussianField`.
    """

    def __init__(self, size: int = 32, alpha: float = 2.0, variance: float = 0.01, mean: float = 0.5,
                 channels: int = 1, train_samples: int = 8192, val_samples: int = 64, batch_size: int = 64,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        if size < 1 or train_samples < 1 or val_samples < 1 or batch_size < 1 or num_workers < 0 or seed < 0:
            raise ValueError("size, train_samples, val_samples and batch_size must be >= 1; "
                             "num_workers and seed >= 0")
        self.field = GaussianField(size, alpha=alpha, variance=variance, channels=channels, mean=mean)
        self.train_samples, self.val_samples = train_samples, val_samples
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.save_hyperparameters()

    def wiener_denoiser(self, y: torch.Tensor, sigma: float | torch.Tensor | None = None) -> torch.Tensor:
        """The exact MMSE denoiser of this data (oracle: needs σ); ``Denoiser`` call signature.

        Args:
            y: noisy images (B, C, H, W).
            sigma: noise std, a float or a (B,) tensor, [0, 1] units.

        Returns:
            x̂ = E[x | y], shape of ``y``.
        """
        return self.field.wiener_denoise(y, sigma)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density of clean images (B, C, H, W), (B,) in nats."""
        return self.field.log_prob(x)

    def train_dataloader(self) -> DataLoader:
        """Batches (B, C, size, size) of the fixed training set, reshuffled every epoch."""
        dataset = GaussianFieldDataset(self.field, self.train_samples, self.seed, _TRAIN)
        # Shuffling only mixes batches; under DDP Lightning swaps in a DistributedSampler.
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, generator=generator,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        """Single validation images (1, C, size, size)."""
        return DataLoader(GaussianFieldDataset(self.field, self.val_samples, self.seed, _VAL), batch_size=1)

    def test_dataloader(self) -> DataLoader:
        """Single test images (1, C, size, size), independent of the validation ones."""
        return DataLoader(GaussianFieldDataset(self.field, self.val_samples, self.seed, _TEST), batch_size=1)

    def predict_dataloader(self) -> DataLoader:
        """The test images."""
        return self.test_dataloader()
