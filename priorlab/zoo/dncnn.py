"""BF-DnCNN (Mohan, Kadkhodaie, Simoncelli & Fernandez-Granda, ICLR 2020; algorithms.md §2.3)."""

from __future__ import annotations

import torch
from torch import nn

from priorlab.zoo.layers import batch_norm, check_input, conv3x3, init_kaiming


class DnCNN(nn.Module):
    """Bias-free DnCNN: ``depth`` 3×3 convolutions, the middle ones followed by (BF) batch norm and ReLU.

    Layer 1: conv C→width, ReLU. Layers 2..depth−1: conv, batch norm, ReLU. Layer ``depth``: conv
    width→C. The last layer predicts the noise; the module returns the **denoised image**
    x̂ = y − residual (Denoiser contract).

    Args:
        in_chans: image channels C (1 gray, 3 color).
        depth: number of convolution layers (≥ 2). 20 in the paper (receptive field 41×41).
        width: feature channels. 64 in the paper.
        bias: switch on convolution biases and ordinary batch norm (the biased DnCNN baseline).
    """

    def __init__(self, in_chans: int = 1, depth: int = 20, width: int = 64, bias: bool = False) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        if in_chans < 1 or width < 1:
            raise ValueError(f"in_chans and width must be positive, got {in_chans}, {width}")
        self.in_chans = in_chans
        self.depth = depth
        self.width = width
        self.bias = bias
        layers: list[nn.Module] = [conv3x3(in_chans, width, bias=bias), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [conv3x3(width, width, bias=bias), batch_norm(width, bias=bias), nn.ReLU(inplace=True)]
        layers.append(conv3x3(width, in_chans, bias=bias))
        self.body = nn.Sequential(*layers)
        init_kaiming(self)

    @property
    def min_size(self) -> int:
        """Smallest image height/width the network accepts."""
        return 3

    @property
    def receptive_field(self) -> int:
        return 2 * self.depth + 1

    def forward(self, y: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """Denoise ``y`` (B, C, H, W); blind, so ``sigma`` is ignored. Returns x̂ (B, C, H, W)."""
        check_input(y, self.in_chans, self)
        return y - self.body(y)
