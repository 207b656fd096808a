"""``priorlab sample``: draw images from a trained prior with the coarse-to-fine sampler (Algorithm 1)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from priorlab.cli.io import check_output, progress_interval
from priorlab.files import write_image


def add_ascent_arguments(p, *, beta: float) -> None:
    """Options of the coarse-to-fine ascent shared by ``sample`` and ``solve`` (algorithms.md §4.3)."""
    p.add_argument("--beta", type=float, default=beta,
                   help="noise injection: 1 = none, smaller = more noise and more steps")
    p.add_argument("--h0", type=float, default=0.01, help="initial step size (grows as h0 t / (1 + h0 (t - 1)))")
    p.add_argument("--sigma0", type=float, default=1.0, help="std of the initial noise ([0, 1] scale)")
    p.add_argument("--sigma_final", type=float, default=0.01, help="stop a chain when its sigma_t <= this")


def build_parser():
    from jsonargparse import ArgumentParser

    p = ArgumentParser(prog="priorlab sample", description=(
        "Draw images from the prior implicit in a trained denoiser with the coarse-to-fine stochastic "
        "ascent of Kadkhodaie & Simoncelli (Algorithm 1). Writes the image grid (--out), a convergence "
        "plot <out stem>_convergence.png (sigma_t per step, one line per sample) and <out stem>.json "
        "(settings, per-sample steps and final sigma). Noise levels are on the [0, 1] scale."))
    p.add_argument("--prior", "--ckpt", dest="prior", type=str, required=True,
                   help="checkpoint written by `priorlab fit` (.ckpt), or a prior's name")
    p.add_argument("--num", type=int, default=16, help="number of samples")
    p.add_argument("--size", type=int, default=64, help="height = width of the samples in pixels")
    add_ascent_arguments(p, beta=0.5)
    p.add_argument("--init_mean", type=float, default=0.5, help="mean of the initial noise image")
    p.add_argument("--max_steps", type=int, default=1000, help="cap on the number of steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial and injected noise")
    p.add_argument("--nrow", type=int | None, default=None, help="images per grid row (default ~sqrt(num))")
    p.add_argument("--device", type=str, default="cpu", help="cpu, cuda, cuda:1 …")
    p.add_argument("--out", type=str, default="samples.png", help="image grid (PNG)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p


def write_json(data: dict, path: str | Path) -> Path:
    """Write JSON atomically (temporary file, then rename)."""
    from priorlab.files import write_text_atomic

    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def image_grid(images, nrow: int, pad: int = 2):
    """Tile (B, C, H, W) images in [0, 1] into one (C, H', W') image with white padding."""
    import torch

    b, c, h, w = images.shape
    rows = math.ceil(b / nrow)
    grid = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(b):
        r, q = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top:top + h, left:left + w] = images[i].detach().float().cpu().clamp(0, 1)
    return grid


def convergence_figure(sigmas, sigma_final: float, title: str):
    """σ_t against step, one line per sample, log y axis; sigmas (B, T) with NaN after stopping."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    steps = range(1, sigmas.shape[1] + 1)
    for row in sigmas:
        ax.plot(steps, row.numpy(), lw=0.8, alpha=0.7)
    ax.axhline(sigma_final, color="k", ls="--", lw=0.8, label=f"σ_final = {sigma_final:g}")
    ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel("σ_t = ‖d_t‖/√N  ([0, 1] scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


class ProgressBar:
    """tqdm bar fed by the sampler's callback: steps done, samples still running, largest σ_t."""

    def __init__(self, total: int, desc: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="step", leave=True, mininterval=progress_interval())

    def __call__(self, state) -> None:
        import torch

        running = int(state.active.sum())
        sig = state.sigma[~torch.isnan(state.sigma)]
        # refresh=False: the bar redraws at most every mininterval (set_postfix alone would redraw each step,
        # flooding logs when stderr is a file).
        self.bar.set_postfix(running=running, sigma=f"{float(sig.max()):.4f}" if sig.numel() else "-",
                             refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run(args: list[str]) -> int:
    import torch

    from priorlab.samplers import sample_adaptive
    from priorlab.zoo import load

    cfg = build_parser().parse_args(args)
    if cfg.num < 1 or cfg.size < 1:
        raise ValueError(f"--num and --size must be positive, got {cfg.num} and {cfg.size}")
    if cfg.nrow is not None and cfg.nrow < 1:
        raise ValueError(f"--nrow must be >= 1 (images per grid row), got {cfg.nrow}")
    out = Path(cfg.out)
    conv = out.with_name(f"{out.stem}_convergence.png")
    meta = out.with_suffix(".json")
    for path in (out, conv):
        check_output(path, [], cfg.overwrite)
    if meta.exists() and not cfg.overwrite:
        raise FileExistsError(f"{meta} exists; pass --overwrite to replace it")

    net = load(cfg.prior, map_location=cfg.device)
    channels = net.prior_config.get("channels", net.arch_config["init_args"].get("in_chans"))
    if cfg.size < getattr(net, "min_size", 1):
        raise ValueError(f"--size {cfg.size} is smaller than this model's minimum size {net.min_size}")
    g = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    bar = ProgressBar(cfg.max_steps, f"sampling {cfg.num}x{channels}x{cfg.size}x{cfg.size}")
    t0 = time.perf_counter()
    try:
        res = sample_adaptive(net, (cfg.num, channels, cfg.size, cfg.size), h0=cfg.h0, beta=cfg.beta,
                              sigma0=cfg.sigma0, sigma_final=cfg.sigma_final, init_mean=cfg.init_mean,
                              max_steps=cfg.max_steps, generator=g, device=cfg.device, callback=bar)
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0

    from priorlab.plotting import save_figure

    nrow = cfg.nrow or math.ceil(math.sqrt(cfg.num))
    write_image(image_grid(res.images, nrow), out)
    title = f"{Path(cfg.prior).name}: β={cfg.beta:g}, h0={cfg.h0:g}, {cfg.size}x{cfg.size}, seed {cfg.seed}"
    save_figure(convergence_figure(res.sigmas, cfg.sigma_final, title), conv)
    params = {k: v for k, v in res.params.items()}
    write_json(dict(prior=str(cfg.prior), num=cfg.num, size=cfg.size, channels=channels, seed=cfg.seed,
                    device=cfg.device, seconds=round(elapsed, 3), params=params,
                    steps=res.steps.tolist(), final_sigma=[round(float(s), 6) for s in res.final_sigma],
                    converged=res.converged.tolist(), diverged=res.diverged.tolist()), meta)
    steps = res.steps.float()
    print(f"{cfg.num} samples {channels}x{cfg.size}x{cfg.size} in {elapsed:.1f} s: steps mean {steps.mean():.1f} "
          f"(min {int(steps.min())}, max {int(steps.max())}), converged {int(res.converged.sum())}/{cfg.num}"
          + (f", diverged {int(res.diverged.sum())}" if res.diverged.any() else ""))
    print(f"grid -> {out}\nconvergence plot -> {conv}\nsteps and sigmas -> {meta}")
    return 0
