"""Figures people would rather look at than read (matplotlib is imported lazily)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from priorlab.files import atomic_path


@dataclass(frozen=True)
class DenoisedPanel:
    """One row of a denoising figure: tensors (C, H, W) in [0, 1] (clean may be None) and PSNRs in dB."""

    noisy: torch.Tensor
    denoised: torch.Tensor
    clean: torch.Tensor | None = None
    title: str = ""
    psnr_in: float | None = None
    psnr_out: float | None = None


def _to_numpy_image(x: torch.Tensor):
    x = x.detach().float().cpu().clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def denoising_figure(panels: Sequence[DenoisedPanel], *, suptitle: str = "", width: float = 3.2):
    """A grid with one row per image: noisy | denoised | clean, PSNRs in the titles.

    Returns:
        A matplotlib ``Figure`` (Agg backend; nothing is shown).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ncols = 3 if any(p.clean is not None for p in panels) else 2
    fig, axes = plt.subplots(len(panels), ncols, figsize=(width * ncols, width * len(panels) + 0.4),
                             squeeze=False)
    for row, p in zip(axes, panels):
        cmap = "gray" if p.noisy.shape[0] == 1 else None
        items = [("noisy", p.noisy, p.psnr_in), ("denoised", p.denoised, p.psnr_out)]
        if ncols == 3:
            items.append(("clean", p.clean, None))
        for ax, (name, img, psnr) in zip(row, items):
            ax.axis("off")
            if img is None:
                continue
            ax.imshow(_to_numpy_image(img), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            label = f"{p.title} {name}".strip()
            ax.set_title(f"{label}\n{psnr:.2f} dB" if psnr is not None else label, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()) if suptitle else None)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def save_figure(fig, path: str | Path, *, dpi: int = 100) -> Path:
    """Write a figure as PNG atomically (temporary file, then rename) and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)
