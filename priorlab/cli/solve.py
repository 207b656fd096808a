"""``priorlab solve``: reconstruct an image from linear measurements with a trained prior (Algorithm 2)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from priorlab.cli.io import check_output, format_ssim, read_image, ssim_score
from priorlab.cli.sample import ProgressBar, add_ascent_arguments, write_json
from priorlab.files import write_image

TASKS = ("inpaint", "pixels", "sr", "deblur", "cs", "demosaic")
DEFAULT_FRACTION = {"pixels": 0.1, "deblur": 0.1, "cs": 0.1}  # the reference README's examples


def build_parser():
    from jsonargparse import ArgumentParser

    p = ArgumentParser(prog="priorlab solve", description=(
        "Simulate linear measurements of a clean image and reconstruct it with the prior implicit in a "
        "trained denoiser (Kadkhodaie & Simoncelli, Algorithm 2). Writes to --out: original.png, "
        "measurement.png (the measured subspace's naive reconstruction M Mᵀx, or the blurred image with "
        "--blur_sigma), sample_<i>.png, mean.png, "
        "std.png (scaled to its maximum, stated in metrics.json), figure.png and metrics.json; prints "
        "PSNR/SSIM against the input."))
    p.add_argument("--prior", "--ckpt", dest="prior", type=str, required=True,
                   help="checkpoint written by `priorlab fit` (.ckpt), or a prior's name")
    p.add_argument("--task", type=Literal[tuple(TASKS)], required=True,
                   help="inpaint (missing box), pixels (random pixels kept), sr (block averaging), deblur "
                        "(low-pass Fourier band kept), cs (random orthonormal projections), demosaic (colour)")
    p.add_argument("--input", type=str, required=True, help="clean image file (PNG, JPEG, TIFF, BMP)")
    p.add_argument("--out", type=str, required=True, help="output folder")
    p.add_argument("--fraction", type=float | None, default=None,
                   help="kept fraction in (0, 1) for pixels / deblur / cs (default 0.1)")
    p.add_argument("--blur_sigma", type=float | None, default=None,
                   help="deblur: undo a Gaussian blur of this std in pixels (the measurement is read off the "
                        "blurred image where the blur's transfer function is >= 0.1) instead of keeping a fraction "
                        "of the frequencies")
    p.add_argument("--factor", type=int | None, default=None,
                   help="super-resolution factor (must divide the size; default 4)")
    p.add_argument("--box", type=int, nargs=4, default=None, metavar=("TOP", "LEFT", "HEIGHT", "WIDTH"),
                   help="inpainting box in pixels, e.g. --box 16 16 32 32 (default: centred half-size block)")
    p.add_argument("--mosaic", type=Literal["bayer", "cones"] | None, default=None,
                   help="demosaicing pattern: bayer (RGGB, the default) or cones (a random cone-like mosaic)")
    p.add_argument("--samples", type=int, default=4, help="stochastic reconstructions (their mean and std)")
    p.add_argument("--crop", type=int | None, default=None, help="centre-crop the input to N x N first")
    p.add_argument("--convert", type=Literal["none", "gray", "rgb"], default="none",
                   help="convert the input to gray (luminance) or RGB to match the model")
    add_ascent_arguments(p, beta=0.01)  # the 2021 demo's inverse problems use beta = 0.01
    p.add_argument("--max_steps", type=int, default=2000, help="cap on the number of steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the operator's randomness and of the sampler")
    p.add_argument("--device", type=str, default="cpu", help="cpu, cuda, cuda:1 …")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p


def make_operator(cfg, image_shape, generator):
    """The measurement operator of ``--task`` for images (C, H, W)."""
    from priorlab import solvers

    fraction = cfg.fraction if cfg.fraction is not None else DEFAULT_FRACTION.get(cfg.task)
    if cfg.fraction is not None and cfg.task not in DEFAULT_FRACTION:
        raise ValueError(f"--fraction applies to the pixels, deblur and cs tasks, not {cfg.task}")
    for option, task in (("blur_sigma", "deblur"), ("box", "inpaint"), ("factor", "sr"), ("mosaic", "demosaic")):
        if getattr(cfg, option) is not None and cfg.task != task:
            raise ValueError(f"--{option} applies to the {task} task, not {cfg.task}")
    if cfg.task == "inpaint":
        return solvers.box_inpainting(image_shape, None if cfg.box is None else tuple(cfg.box))
    if cfg.task == "pixels":
        return solvers.random_pixels(image_shape, fraction, generator=generator)
    if cfg.task == "sr":
        return solvers.BlockAverage(image_shape, 4 if cfg.factor is None else cfg.factor)
    if cfg.task == "deblur":
        if cfg.blur_sigma is not None:
            if cfg.fraction is not None:
                raise ValueError("give either --blur_sigma (Gaussian blur) or --fraction (low-pass band), not both")
            return solvers.GaussianDeblur(image_shape, cfg.blur_sigma)
        return solvers.spectral_lowpass(image_shape, fraction)
    if cfg.task == "cs":
        return solvers.compressive_sensing(image_shape, fraction, generator=generator)
    if cfg.task == "demosaic":
        if image_shape[0] != 3:
            raise ValueError("demosaicing needs a colour (RGB) prior and image; this prior is gray")
        if cfg.mosaic in (None, "bayer"):
            return solvers.bayer_demosaic(image_shape)
        return solvers.random_mosaic(image_shape, generator=generator)
    raise ValueError(f"unknown task {cfg.task!r}; choose from {', '.join(TASKS)}")  # pragma: no cover


def solve_figure(panels, title: str):
    """One row of images (C, H, W) with captions: [(caption, image, cmap or None)]."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from priorlab.plotting import _to_numpy_image

    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels), 3.0), squeeze=False)
    for ax, (caption, img, cmap) in zip(axes[0], panels):
        ax.imshow(_to_numpy_image(img), cmap=cmap or ("gray" if img.shape[0] == 1 else None), vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(caption, fontsize=8)
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.88))
    fig.suptitle(title, fontsize=9)
    return fig


def run(args: list[str]) -> int:
    import torch
    from torchmetrics.functional.image import peak_signal_noise_ratio as psnr_fn

    from priorlab.core import check_images
    from priorlab.plotting import save_figure
    from priorlab.solvers import GaussianDeblur, solve_linear
    from priorlab.zoo import load

    cfg = build_parser().parse_args(args)
    if cfg.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {cfg.samples}")
    inp, out = Path(cfg.input), Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out must be a folder, but {out} is a file")
    names = ["original.png", "measurement.png", "mean.png", "std.png", "figure.png"]
    names += [f"sample_{i}.png" for i in range(cfg.samples)]
    for name in names:
        check_output(out / name, [inp], cfg.overwrite)
    if (out / "metrics.json").exists() and not cfg.overwrite:
        raise FileExistsError(f"{out / 'metrics.json'} exists; pass --overwrite to replace it")
    stale = sorted(p.name for p in out.glob("sample_*.png") if p.name not in names) if out.is_dir() else []
    if stale:  # they would sit beside a metrics.json that does not describe them; priorlab deletes nothing
        raise FileExistsError(f"{out} holds {', '.join(stale)} from an earlier run with more samples; use a new "
                              "--out folder (or remove them)")

    x = read_image(inp, convert=cfg.convert)[None]
    if cfg.crop is not None:
        h, w = x.shape[-2:]
        if not 1 <= cfg.crop <= min(h, w):
            raise ValueError(f"--crop {cfg.crop} must be between 1 and the image size {h}x{w}")
        top, left = (h - cfg.crop) // 2, (w - cfg.crop) // 2
        x = x[..., top:top + cfg.crop, left:left + cfg.crop]
    net = load(cfg.prior, map_location=cfg.device)
    channels = net.prior_config.get("channels", net.arch_config["init_args"].get("in_chans"))
    if x.shape[1] != channels:
        raise ValueError(f"input image {inp.name} has {x.shape[1]} channel(s) but the prior expects {channels}; "
                         f"pass --convert {'gray' if channels == 1 else 'rgb'}")
    check_images(x, channels=channels, name=f"input image {inp.name}", min_size=getattr(net, "min_size", 1))
    x = x.to(cfg.device)
    op_gen = torch.Generator().manual_seed(cfg.seed)
    op = make_operator(cfg, tuple(x.shape[1:]), op_gen)
    if isinstance(op, GaussianDeblur):  # observe the blurred image; read the measurement off it
        naive, naive_label = op.blur(x), "blurred input"
        c = op.measurement_from_blurred(naive)
    else:  # M Mᵀx: zero fill / block replication / low-pass
        c, naive, naive_label = op.measure(x), op.project(x), "naive M Mᵀx"

    g = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    bar = ProgressBar(cfg.max_steps, f"{cfg.task} {x.shape[1]}x{x.shape[2]}x{x.shape[3]} x{cfg.samples}")
    t0 = time.perf_counter()
    try:
        res = solve_linear(net, op, c, num_samples=cfg.samples, h0=cfg.h0, beta=cfg.beta, sigma0=cfg.sigma0,
                           sigma_final=cfg.sigma_final, max_steps=cfg.max_steps, generator=g, callback=bar)
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0

    samples = res.samples[0].clamp(0, 1)  # (S, C, H, W)
    mean = res.mean.clamp(0, 1)
    std = res.std[0]
    std_max = float(std.max())

    def scores(img):
        img = img.reshape(1, *x.shape[1:]).clamp(0, 1)
        return (psnr_fn(img, x, data_range=1.0).item(), ssim_score(img, x))

    rows = [(naive_label, *scores(naive), None)]
    rows += [(f"sample {i}", *scores(samples[i]), int(res.steps[0, i])) for i in range(cfg.samples)]
    rows += [(f"mean of {cfg.samples}", *scores(mean), None)]

    write_image(x[0], out / "original.png")
    write_image(naive[0].clamp(0, 1), out / "measurement.png")
    for i in range(cfg.samples):
        write_image(samples[i], out / f"sample_{i}.png")
    write_image(mean[0], out / "mean.png")
    write_image((std / std_max if std_max > 0 else std), out / "std.png")
    panels = [("original", x[0], None), (f"measured ({op.fraction:.0%})\n{rows[0][1]:.2f} dB", naive[0], None),
              (f"sample 0\n{rows[1][1]:.2f} dB", samples[0], None),
              (f"mean of {cfg.samples}\n{rows[-1][1]:.2f} dB", mean[0], None),
              (f"std (max {std_max:.3f})", std.mean(0, keepdim=True) / max(std_max, 1e-12), "magma")]
    title = f"{cfg.task}: {inp.name}, {x.shape[2]}x{x.shape[3]}, {Path(cfg.prior).name}, β={cfg.beta:g}"
    save_figure(solve_figure(panels, title), out / "figure.png")
    write_json(dict(prior=str(cfg.prior), input=str(inp), task=cfg.task, operator=repr(op),
                    num_measurements=op.num_measurements, fraction=op.fraction, image_shape=list(x.shape[1:]),
                    crop=cfg.crop, seed=cfg.seed, device=cfg.device, seconds=round(elapsed, 3),
                    params=dict(res.params), std_png_scale=std_max,
                    steps=res.steps[0].tolist(), final_sigma=[round(float(s), 6) for s in res.final_sigma[0]],
                    converged=res.converged[0].tolist(), diverged=res.diverged[0].tolist(),
                    measurement_error_before_reprojection=[round(float(e), 6) for e in res.measurement_error[0]],
                    metrics=[dict(name=n, psnr=round(p, 3), ssim=None if s is None else round(s, 4), steps=st)
                             for n, p, s, st in rows]),
               out / "metrics.json")
    print(f"{cfg.task} on {inp.name} ({x.shape[1]}x{x.shape[2]}x{x.shape[3]}, {op.num_measurements} measurements, "
          f"{op.fraction:.1%}): {cfg.samples} samples in {elapsed:.1f} s")
    print(f"{'':<16}{'PSNR dB':>9}{'SSIM':>8}{'steps':>7}")
    for name, p, s, st in rows:
        print(f"{name:<16}{p:>9.2f}{format_ssim(s):>8}{'' if st is None else st:>7}")
    if res.diverged.any() or not res.converged.all():
        print(f"warning: {int((~res.converged).sum())} chain(s) did not converge (see metrics.json)")
    print(f"outputs -> {out}/")
    return 0
