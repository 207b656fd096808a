"""Named variants: tiny entry points registered in priorlab's and timm's registries."""

from __future__ import annotations

from priorlab.zoo.dncnn import DnCNN
from priorlab.zoo.energy_unet import EnergyNet
from priorlab.zoo.registry import register_model
from priorlab.zoo.unet import UNet

__all__: list[str] = []


@register_model(DnCNN, family="dncnn", depth=20, width=64)
def bf_dncnn(pretrained=False, **kwargs):
    """BF-DnCNN, 20 layers × 64 channels, receptive field 41 (ICLR 2020)."""


@register_model(DnCNN, family="dncnn", depth=20, width=64, bias=True)
def dncnn(pretrained=False, **kwargs):
    """DnCNN with biases and ordinary batch norm: the biased counterpart of bf_dncnn."""


@register_model(DnCNN, family="dncnn", depth=10, width=32)
def bf_dncnn_small(pretrained=False, **kwargs):
    """Small BF-DnCNN, 10 layers × 32 channels (CPU quickstart)."""


@register_model(DnCNN, family="dncnn", depth=10, width=32, bias=True)
def dncnn_small(pretrained=False, **kwargs):
    """Biased counterpart of bf_dncnn_small."""


@register_model(DnCNN, family="dncnn", depth=4, width=8)
def test_bf_dncnn(pretrained=False, **kwargs):
    """Tiny BF-DnCNN for tests (4 layers × 8 channels)."""


@register_model(UNet, family="unet", num_blocks=3, width=64)
def bf_unet(pretrained=False, **kwargs):
    """BF-UNet of the generalization paper: 3 scales 64/128/256, 512 in the middle (ICLR 2024)."""


@register_model(UNet, family="unet", num_blocks=3, width=64, bias=True)
def unet(pretrained=False, **kwargs):
    """UNet with biases and ordinary batch norm: the biased counterpart of bf_unet."""


@register_model(UNet, family="unet", num_blocks=3, width=16)
def bf_unet_small(pretrained=False, **kwargs):
    """Small BF-UNet, 3 scales 16/32/64, 128 in the middle, 0.48 M params, receptive field 92 (CPU priors)."""


@register_model(UNet, family="unet", num_blocks=3, width=16, bias=True)
def unet_small(pretrained=False, **kwargs):
    """Biased counterpart of bf_unet_small."""


@register_model(UNet, family="unet", num_blocks=2, width=4)
def test_bf_unet(pretrained=False, **kwargs):
    """Tiny BF-UNet for tests (2 scales, 4/8 channels, 16 in the middle)."""


# ---- energy models (dual score matching, algorithms.md §7) ------------------------------------------
@register_model(EnergyNet, family="energy", num_scales=3, width=64, num_layers=3)
def energy_unet(pretrained=False, **kwargs):
    """Energy UNet of dual score matching: 3 scales 64→512, 3 convs per block, 8.65 M params (NeurIPS 2025)."""


@register_model(EnergyNet, family="energy", in_chans=1, num_scales=2, width=48, num_layers=3,
                time_embedding="log_variance", time_offset=True)
def energy_unet_small(pretrained=False, **kwargs):
    """Energy UNet for 28x28 Fashion-MNIST: 2 scales 48→192, log-t embedding, time offset, 1.44 M params (5.8 MB)."""


@register_model(EnergyNet, family="energy", num_scales=2, width=4, num_layers=2, num_freqs=4, emb_dim=8,
                time_embedding="log_variance", time_offset=True)
def test_energy_unet(pretrained=False, **kwargs):
    """Tiny energy UNet for tests (2 scales, 4/8 channels, 16 in the middle)."""
