"""Figures of ``priorlab analyze`` (matplotlib imported lazily, Agg backend, nothing shown)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

# BF-DnCNN, 10 patches of 40×40, ‖A_y‖_F² (algorithms.md §12.3).
PUBLISHED_DIMS = {10: 346.6, 20: 164.9, 30: 100.6, 40: 71.4, 50: 54.3, 60: 43.6, 70: 36.8, 80: 32.2,
                  90: 29.1, 100: 26.7}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _gray(ax, img: torch.Tensor, title: str = "") -> None:
    img = img.detach().float().cpu().clamp(0, 1)
    ax.imshow((img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)).numpy(), cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


SIGN_LEGEND = {1: "red > 0, blue < 0", 3: "RGB about mid-gray: gray = 0, a channel brighter than gray > 0"}


def _signed(ax, img: torch.Tensor, title: str = "", saturate: float = 1.0) -> None:
    """Signed map that saturates at ``saturate`` × the largest |value|: one channel in red (> 0) and blue (< 0);
    three channels as an RGB image about mid-gray (0.5 + 0.5·value/limit per channel), which keeps each
    channel's sign (:data:`SIGN_LEGEND`)."""
    a = img.detach().float().cpu()
    lim = max(saturate * a.abs().max().item(), 1e-12)
    if a.shape[0] == 1:
        ax.imshow(a[0].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    else:
        ax.imshow((0.5 + 0.5 * (a / lim).clamp(-1, 1)).permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def jacobian_figure(noisy, denoised, eigenvalues, singular_values, title: str):
    """Noisy crop | denoised crop | spectrum of the symmetric part (and singular values when exact)."""
    plt = _plt()
    fig = plt.figure(figsize=(10, 3.4))
    ax1, ax2, ax3 = fig.add_subplot(1, 4, 1), fig.add_subplot(1, 4, 2), fig.add_subplot(1, 2, 2)
    _gray(ax1, noisy, "noisy y")
    _gray(ax2, denoised, "denoised x̂(y)")
    ev = eigenvalues.float().cpu()
    ax3.plot(range(1, len(ev) + 1), ev.numpy(), lw=1.5, label="eigenvalues of ½(A+Aᵀ)")
    if singular_values is not None:
        ax3.plot(range(1, len(singular_values) + 1), singular_values.float().cpu().numpy(), lw=1, ls="--",
                 label="singular values of A")
    ax3.set_xscale("log")
    ax3.set_xlabel("index k")
    ax3.axhline(0, color="k", lw=0.5)
    ax3.legend(fontsize=8)
    ax3.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def filters_figure(crop, res, sigmas_255: Sequence[float], title: str):
    """One row per σ: noisy crop with the pixels marked, then each pixel's filter (row of A_y)."""
    plt = _plt()
    s_n, k_n = res.filters.shape[:2]
    fig, axes = plt.subplots(s_n, k_n + 2, figsize=(1.7 * (k_n + 2), 1.8 * s_n + 0.5), squeeze=False)
    for s in range(s_n):
        _gray(axes[s, 0], res.noisy[s], f"noisy σ={sigmas_255[s]:g}")
        for k, (r, c) in enumerate(res.pixels.tolist()):
            axes[s, 0].plot(c, r, "o", ms=4, mfc="none", mec=f"C{k % 10}")
        _gray(axes[s, 1], res.denoised[s], "denoised")
        for k in range(k_n):
            ax = axes[s, k + 2]
            _signed(ax, res.filters[s, k], f"px {tuple(res.pixels[k].tolist())}\nr={res.radii[s, k]:.2f} "
                                           f"Σ={res.sums[s, k]:.2f}", saturate=0.2)
            r, c = res.pixels[k].tolist()
            ax.plot(c, r, "+", ms=5, color=f"C{k % 10}")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def radius_figure(res, sigmas_255: Sequence[float], title: str):
    """Effective radius of each pixel's filter against σ."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for k in range(res.radii.shape[1]):
        ax.plot(sigmas_255, res.radii[:, k].numpy(), "o-", ms=3, color=f"C{k % 10}",
                label=f"px {tuple(res.pixels[k].tolist())}")
    ax.set_xlabel("σ (0-255 scale)")
    ax.set_ylabel("effective radius (pixels)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def basis_figure(noisy, eigenvalues, eigenvectors, title: str, ncols: int = 8):
    """The noisy crop and the leading eigenvectors of ½(A + Aᵀ) with their eigenvalues."""
    plt = _plt()
    k = eigenvectors.shape[0]
    nrows = (k + 1 + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.5 * ncols, 1.6 * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    _gray(axes.flat[0], noisy, "noisy y")
    for i in range(k):
        _signed(axes.flat[i + 1], eigenvectors[i], f"λ{i + 1}={eigenvalues[i]:.3f}")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def dimensionality_figure(sigmas_255: Sequence[float], values: dict[str, torch.Tensor], title: str):
    """Effective dimensionality against σ (log-log), mean and range over patches, with an α/σ guide."""
    plt = _plt()
    s = torch.tensor(list(sigmas_255), dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (label, v) in enumerate(values.items()):
        mean = v.double().mean(1)
        ax.plot(s.numpy(), mean.numpy(), "o-", color=f"C{i}", label=f"{label} (mean)")
        ax.fill_between(s.numpy(), v.min(1).values.numpy(), v.max(1).values.numpy(), color=f"C{i}", alpha=0.15)
        if i == 0:
            alpha = (mean[0] * s[0]).item()  # the α/σ guide passes through the first point
            ax.plot(s.numpy(), (alpha / s).numpy(), "k:", label=f"∝ 1/σ guide ({alpha:.0f}/σ)")
    pub = [k for k in PUBLISHED_DIMS if s.min() <= k <= s.max()]
    if pub:
        ax.plot(pub, [PUBLISHED_DIMS[k] for k in pub], "s--", color="gray", ms=3,
                label="published BF-DnCNN ‖A‖_F² (§12.3)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("σ (0-255 scale)")
    ax.set_ylabel("effective dimensionality")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def generalization_figure(sigmas_255: Sequence[float], curves: dict[str, torch.Tensor], psnr_in: torch.Tensor,
                          ranges: dict[str, tuple[float, float] | None], title: str, published: dict | None = None):
    """Mean output PSNR against σ for every prior, input PSNR for reference, training ranges shaded;
    ``published`` (prior label → PublishedResult) adds the like-trained published curves, dashed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, v) in enumerate(curves.items()):
        ax.plot(sigmas_255, v.numpy(), "o-", ms=3, color=f"C{i}", label=label)
        pub = (published or {}).get(label)
        if pub is not None:
            ks = sorted(pub.psnr)
            ax.plot(ks, [pub.psnr[k] for k in ks], "s--", ms=3, color=f"C{i}", alpha=0.6,
                    label=f"{pub.method}, {pub.dataset}")
        rng = ranges.get(label)
        if rng is not None:
            ax.axvspan(rng[0], rng[1], color=f"C{i}", alpha=0.08)
    ax.plot(sigmas_255, psnr_in.numpy(), "k:", label="noisy input")
    ax.set_xlabel("σ (0-255 scale)")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig
