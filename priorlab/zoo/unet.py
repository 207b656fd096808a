"""Bias-free UNet of the generalization paper (Kadkhodaie et al., ICLR 2024; algorithms.md §2.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from priorlab.zoo.layers import batch_norm, check_input, conv3x3, init_kaiming


def _conv_block(in_ch: int, out_ch: int, n_conv: int, *, bias: bool, first_norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_conv):
        layers.append(conv3x3(in_ch if i == 0 else out_ch, out_ch, bias=bias))
        if i > 0 or first_norm:
            layers.append(batch_norm(out_ch, bias=bias, variant="B"))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """Bias-free UNet: ``num_blocks`` scales with widths w, 2w, 4w…, a middle block of width 2^num_blocks·w.

    Its batch norm is the reference's variant B (:class:`~priorlab.zoo.layers.BFBatchNorm2dB`: biased variance
    with ε inside the root, a running std); the bundled small UNets were trained with variant A layers before
    2026-11-27, and their running variances load as the equivalent running std (same outputs).

    Encoder block 0: conv → ReLU; conv → BN → ReLU. Other encoder blocks and the middle: (conv → BN →
    ReLU) × 2. Average pooling 2×2 between scales; 2×2 transposed convolutions up, concatenated with
    the encoder features; decoder blocks (conv → BN → ReLU) × 2 except the last, which ends with a
    3×3 conv to C channels. The network predicts the noise; the module returns x̂ = y − residual.

    Inputs whose height or width is not a multiple of 2^num_blocks are reflect-padded and cropped back
    (reflection is linear, so homogeneity is kept).

    Args:
        in_chans: image channels C.
        num_blocks: number of scales (3 in the paper: 64/128/256, 512 in the middle).
        width: channels at the finest scale (64 in the paper).
        bias: switch on biases and ordinary batch norm (the biased counterpart).
    """

    def __init__(self, in_chans: int = 1, num_blocks: int = 3, width: int = 64, bias: bool = False) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.in_chans = in_chans
        self.num_blocks = num_blocks
        self.width = width
        self.bias = bias
        widths = [width * 2**i for i in range(num_blocks)]
        self.encoders = nn.ModuleList()
        ch = in_chans
        for i, w in enumerate(widths):
            self.encoders.append(_conv_block(ch, w, 2, bias=bias, first_norm=i > 0))
            ch = w
        self.middle = _conv_block(ch, 2 * ch, 2, bias=bias)
        ch = 2 * ch
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            self.ups.append(nn.ConvTranspose2d(ch, w, kernel_size=2, stride=2, bias=bias))
            if i > 0:
                self.decoders.append(_conv_block(2 * w, w, 2, bias=bias))
            else:
                self.decoders.append(nn.Sequential(conv3x3(2 * w, w, bias=bias), batch_norm(w, bias=bias, variant="B"),
                                                   nn.ReLU(inplace=True), conv3x3(w, in_chans, bias=bias)))
            ch = w
        init_kaiming(self)

    @property
    def size_multiple(self) -> int:
        return 2**self.num_blocks

    @property
    def min_size(self) -> int:
        """Smallest image height/width the network accepts (one pixel at the coarsest scale)."""
        return self.size_multiple

    def _residual(self, y: torch.Tensor) -> torch.Tensor:
        skips = []
        h = y
        for enc in self.encoders:
            h = enc(h)
            skips.append(h)
            h = F.avg_pool2d(h, 2)
        h = self.middle(h)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            h = dec(torch.cat([up(h), skip], dim=1))
        return h

    def forward(self, y: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """Denoise ``y`` (B, C, H, W); blind, so ``sigma`` is ignored. Returns x̂ (B, C, H, W)."""
        check_input(y, self.in_chans, self)
        H, W = y.shape[-2:]
        m = self.size_multiple
        if H < m or W < m:
            raise ValueError(f"image {H}x{W} is smaller than this UNet's minimum size {m}x{m}")
        ph, pw = (-H) % m, (-W) % m
        if ph or pw:
            x = F.pad(y, (0, pw, 0, ph), mode="reflect")
            return y - self._residual(x)[..., :H, :W]
        return y - self._residual(y)
