"""``priorlab logp``: log-probabilities of images under a trained prior (energy in one pass, or the ODE)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Literal

from priorlab.cli.io import progress_interval

JSON_NAME = "logp.json"
HIST_NAME = "logp_hist.png"


def build_parser():
    from jsonargparse import ArgumentParser

    p = ArgumentParser(prog="priorlab logp", description=(
        "Negative log-likelihood of images in bits/dim (mean ± standard error) under a trained prior. "
        "--estimator energy reads log p(x) of a normalized energy model in one network evaluation; ode "
        "integrates the probability-flow ODE of any denoiser (slow reference); both runs both on the same "
        "images and prints the time ratio. Writes DIR/logp.json (per-image values, dataset version, "
        "dequantization, estimator, solver and precision settings) and DIR/logp_hist.png."))
    p.add_argument("--prior", "--ckpt", dest="prior", type=str, required=True,
                   help="a prior's name or a checkpoint (.ckpt) written by `priorlab fit`")
    p.add_argument("--data", type=str, required=True,
                   help="imagenet64 | imagenet32 | fashion-mnist | npz:PATH | folder:PATH | hf:NAME")
    p.add_argument("--split", type=str, default="val", help="val (test) or train")
    p.add_argument("--limit", type=int | None, default=None, help="evaluate the first N images only")
    p.add_argument("--resolution", type=int | None, default=None,
                   help="folder:/hf: only: center-crop and box-downsample images to this size")
    p.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, default=128,
                   help="images per evaluation (energy estimator)")
    p.add_argument("--ode_batch_size", "--ode-batch-size", dest="ode_batch_size", type=int, default=16,
                   help="images integrated together by the ODE estimator (they share adaptive steps)")
    p.add_argument("--estimator", type=Literal["energy", "ode", "both"], default="energy",
                   help="energy (normalized energy models, 1 evaluation per image), ode (any denoiser), both")
    p.add_argument("--dequantization", type=Literal["none", "uniform"], default="none",
                   help="none: density at k/255 (the dual score matching convention); uniform: at (k + u)/256")
    p.add_argument("--divergence", type=Literal["hutchinson", "exact"], default="hutchinson",
                   help="ODE divergence: Hutchinson (Rademacher probes) or exact (tiny images only)")
    p.add_argument("--probes", type=int, default=1, help="Hutchinson probes per image")
    p.add_argument("--rtol", type=float, default=1e-5, help="dopri5 relative tolerance (score_sde: 1e-5)")
    p.add_argument("--atol", type=float, default=1e-5, help="dopri5 absolute tolerance")
    p.add_argument("--sigma_min", "--sigma-min", dest="sigma_min", type=float, default=0.002,
                   help="ODE start noise std ([0, 1] scale)")
    p.add_argument("--sigma_max", "--sigma-max", dest="sigma_max", type=float | None, default=None,
                   help="ODE end noise std, where the Gaussian prior is used; default: the model's largest "
                        "trained noise level if recorded, else 80")
    p.add_argument("--prior_mean", "--prior-mean", dest="prior_mean", type=float | None, default=None,
                   help="mean of the Gaussian prior N(mean, sigma_max^2 I); default: mean pixel of the images")
    p.add_argument("--device", type=str, default="cpu", help="cpu, cuda, cuda:1 …")
    p.add_argument("--seed", type=int, default=0, help="seed of the dequantization and the probes")
    p.add_argument("--out", type=str, default="logp_results", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p


def _sigma_max_of(config: dict[str, Any]) -> float | None:
    """Largest noise std the prior was trained on, from its metadata (None if not recorded)."""
    if "sigma_max" in config:
        return float(config["sigma_max"])
    if "t_max" in config:
        return math.sqrt(float(config["t_max"]))
    for key, scale in (("sigma_range", 1.0), ("sigma_range_255", 1 / 255)):
        if isinstance(config.get(key), list | tuple) and config[key]:
            return float(max(config[key])) * scale
    for key in ("log10_t_range", "log10_t"):
        if isinstance(config.get(key), list | tuple) and config[key]:
            return math.sqrt(10.0 ** float(max(config[key])))
    return None


def _mean_pixel(images) -> float:
    """Mean of uint8 images in [0, 1] units, summed in chunks (no float copy of the whole set)."""
    import torch

    total = sum(int(chunk.sum(dtype=torch.int64)) for chunk in images.split(1024))
    return total / (images.numel() * 255.0)


class _Bar:
    """tqdm bar fed by the estimators' progress callback."""

    def __init__(self, total: int, desc: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="img", leave=True, file=sys.stderr,
                        mininterval=progress_interval())

    def __call__(self, state) -> None:
        self.bar.update(state.images_done - self.bar.n)
        if state.estimator == "ode":
            self.bar.set_postfix(nfe=state.nfe, refresh=False)

    def close(self) -> None:
        self.bar.close()


def _pm(stderr: float, digits: int = 4) -> str:
    """"± stderr", or a note that one image has no standard error."""
    return f"± {stderr:.{digits}f}" if math.isfinite(stderr) else "(1 image, no standard error)"


def histogram_figure(results: dict[str, Any], title: str):
    """Histogram of per-image log p(x) in dB/dim, one per estimator; bits/dim (8-bit) on the top axis."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    from priorlab.core.likelihood import db_per_dim

    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    values = {name: db_per_dim(res.log_prob, res.dims).numpy() for name, res in results.items()}
    pooled = np.concatenate(list(values.values()))
    # Shared bins, so that estimators are drawn on one scale even when one of them barely spreads.
    edges = np.histogram_bin_edges(pooled, bins=min(50, max(5, len(pooled) // 4)))
    for name, res in results.items():
        db = values[name]
        ax.hist(db, bins=edges, alpha=0.55, label=f"{name}: {res.mean_bpd:.3f} {_pm(res.stderr_bpd, 3)} bits/dim")
        ax.axvline(float(db.mean()), color="k", lw=0.8, ls="--")
    ax.set_xlabel("log p(x)  [dB/dim = 10·log10 p / d]")
    ax.set_ylabel("images")
    # bits/dim (8-bit convention) = 8 − (dB/dim)/(10·log10 2), algorithms.md §7.4.
    top = ax.secondary_xaxis("top", functions=(lambda d: 8 - d / 3.0103, lambda b: (8 - b) * 3.0103))
    top.set_xlabel("bits/dim", fontsize=8)
    from matplotlib.ticker import MaxNLocator

    for axis in (ax.xaxis, top.xaxis):
        axis.get_major_formatter().set_useOffset(False)
        axis.set_major_locator(MaxNLocator(nbins=5))
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def run(args: list[str]) -> int:
    import torch

    from priorlab.benchmarks.denoising import describe_machine
    from priorlab.benchmarks.logp import energy_log_prob, ode_log_prob
    from priorlab.datamodules.imagenet import load_images
    from priorlab.files import write_text_atomic
    from priorlab.plotting import save_figure
    from priorlab.zoo import load

    cfg = build_parser().parse_args(args)
    for name, value in (("--batch_size", cfg.batch_size), ("--ode_batch_size", cfg.ode_batch_size),
                        ("--probes", cfg.probes)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    for path in (out / JSON_NAME, out / HIST_NAME):
        if path.exists() and not cfg.overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")

    net = load(cfg.prior, map_location=cfg.device)
    config = dict(getattr(net, "prior_config", {}) or {})
    kind = config.get("kind", "energy" if hasattr(net, "log_prob") else "denoiser")
    if cfg.estimator in ("energy", "both") and (kind != "energy" or not callable(getattr(net, "log_prob", None))):
        raise ValueError(f"{cfg.prior} is a {kind} model without a normalized log_prob, so the one-pass energy "
                         "estimator does not apply; use --estimator ode (probability-flow ODE of its denoiser)")
    channels = config.get("channels") or (getattr(net, "arch_config", {}) or {}).get("init_args", {}).get("in_chans")
    data = load_images(cfg.data, split=cfg.split, limit=cfg.limit, channels=channels, resolution=cfg.resolution)
    images = data.images
    n, c, h, w = images.shape
    if min(h, w) < getattr(net, "min_size", 1):
        raise ValueError(f"{cfg.data} has {h}x{w} images, smaller than this model's minimum size {net.min_size}")
    if cfg.estimator != "ode" and getattr(net, "is_calibrated", True) is False:
        raise ValueError(f"{cfg.prior} has no normalization constant C yet (never calibrated), so log p is unknown "
                         "up to a constant: calibrate it (model.calibrate(held_out_images)) or use --estimator ode")
    expected = getattr(net, "calibration_shape", None) if cfg.estimator != "ode" else None
    if expected is not None and tuple(expected) != (c, h, w):
        # C is fixed for one dimension d = C·H·W: at another size the "normalized" log p is off by an unknown amount.
        _, eh, ew = expected
        how = (f"--resolution {eh} center-crops and box-downsamples folder:/hf: data" if eh == ew
               else f"crop or resize the images to {eh}x{ew}")
        raise ValueError(f"{cfg.prior} gives normalized log-probabilities of {'x'.join(map(str, expected))} images "
                         f"(C, H, W) only, the shape its normalization constant was calibrated for, but {cfg.data} "
                         f"has {c}x{h}x{w} images: use data of that size ({how}), or --estimator ode (the "
                         "probability-flow ODE of its denoiser, which takes other sizes)")
    probe = images[:1].to(cfg.device, torch.float32) / 255.0
    try:  # one image first: a size or channel count the network cannot take fails here, clearly
        if cfg.estimator == "ode":
            net(probe, torch.full((1,), 0.1, device=cfg.device))
        else:
            with torch.no_grad():
                net.log_prob(probe)
    except RuntimeError as err:
        raise ValueError(f"the model failed on a {c}x{h}x{w} image of {cfg.data} ({err}); use data of the size and "
                         "channels it was trained on (e.g. --resolution for folder:/hf:)") from err
    print(f"{n} images {c}x{h}x{w} of {data.version}")

    results: dict[str, Any] = {}
    if cfg.estimator in ("energy", "both"):
        bar = _Bar(n, "energy log p")
        try:
            results["energy"] = energy_log_prob(
                net, images, batch_size=cfg.batch_size, dequantization=cfg.dequantization,
                generator=torch.Generator(device="cpu").manual_seed(cfg.seed), callback=bar)
        finally:
            bar.close()
    sigma_max = prior_mean = None
    if cfg.estimator in ("ode", "both"):
        sigma_max = cfg.sigma_max or _sigma_max_of(config) or 80.0
        # The data mean is the consistent centre of the Gaussian prior (benchmarks/logp.py). Images and
        # generators stay on the CPU, so both estimators see the same dequantized images on any device.
        prior_mean = cfg.prior_mean if cfg.prior_mean is not None else _mean_pixel(images)
        bar = _Bar(n, "ODE log p")
        try:
            results["ode"] = ode_log_prob(
                net, images, batch_size=cfg.ode_batch_size, divergence=cfg.divergence,
                probes=cfg.probes, sigma_min=cfg.sigma_min, sigma_max=sigma_max, prior_mean=prior_mean,
                rtol=cfg.rtol, atol=cfg.atol, dequantization=cfg.dequantization,
                generator=torch.Generator().manual_seed(cfg.seed), callback=bar)
        finally:
            bar.close()

    for name, res in results.items():
        print(f"{name:>6}: {res.mean_bpd:.4f} {_pm(res.stderr_bpd)} bits/dim over {res.num_images} images "
              f"(dequantization {res.dequantization}), {res.nfe:.1f} NFE/image, {res.seconds:.3f} s, "
              f"{res.images_per_second:.2f} images/s")
    ratio = None
    if len(results) == 2:
        ratio = results["ode"].seconds / results["energy"].seconds
        print(f"time ratio ODE / energy: {ratio:.1f}x (same model, same {n} images)")

    record = {
        "command": ["priorlab", "logp", *args],
        "prior": cfg.prior, "prior_config": config,
        "prior_weights": {"file": getattr(net, "weights_file", None), "sha256": getattr(net, "weights_sha256", None)},
        "data": {"source": cfg.data, "version": data.version, "split": data.split, "num_images": n,
                 "shape": [c, h, w], "dims": c * h * w, "levels": 256},
        "dequantization": cfg.dequantization, "seed": cfg.seed, "device": cfg.device,
        "machine": describe_machine(cfg.device),
        "bits_per_dim_convention": "-log p / (d ln 2) + 8 (256-level bins of images in [0, 1])",
        "time_ratio_ode_over_energy": ratio,
        "estimators": {
            name: {"mean_bits_per_dim": res.mean_bpd,
                   "stderr_bits_per_dim": res.stderr_bpd if math.isfinite(res.stderr_bpd) else None,
                   "nfe_per_image": res.nfe, "nfe_per_batch": list(res.nfe_per_batch), "seconds": res.seconds,
                   "images_per_second": res.images_per_second, "settings": res.settings,
                   "log_prob_nats": [round(float(v), 6) for v in res.log_prob],
                   "bits_per_dim": [round(float(v), 6) for v in res.bits_per_dim]}
            for name, res in results.items()},
    }
    write_text_atomic(out / JSON_NAME, json.dumps(record, indent=2, default=str) + "\n")
    title = f"{Path(cfg.prior).name} on {data.version}"[:160]
    save_figure(histogram_figure(results, title), out / HIST_NAME)
    print(f"wrote {out / JSON_NAME} and {out / HIST_NAME} ({time.strftime('%Y-%m-%d %H:%M:%S')})")
    return 0
