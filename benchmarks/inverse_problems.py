"""Linear inverse problems: Algorithm 2 with a trained prior beside simple baselines.

Every image is centre-cropped to --crop pixels (fixed crops, no randomness) and converted to the
prior's channel count (gray = luma). Each task runs at two levels. Baselines: nearest-pixel fill
(inpainting, random pixels), bicubic upsampling of the block means (super-resolution) and the
pseudo-inverse MMᵀx (spectral low-pass, compressive sensing). PSNR/SSIM (torchmetrics) are
computed against the crop with outputs clipped to [0, 1]; seconds are wall-clock per image for all
--samples chains together.

Not included (issue #4's stretch goal): deepinv's DPS, DiffPIR and DDRM — deepinv is not installed
in this environment.

Example:
    OMP_NUM_THREADS=1 python benchmarks/inverse_problems.py --prior /work/qs/quickstart.ckpt \\
        --datasets set12 bsd68 photos-test --max-images 3 --crop 64 --out /tmp/inverse.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torchmetrics.functional.image import peak_signal_noise_ratio as psnr_fn
from torchmetrics.functional.image import structural_similarity_index_measure as ssim_fn

from priorlab import solvers
from priorlab.cli.io import read_image
from priorlab.datamodules import load_photo
from priorlab.datamodules.photos import TEST_PHOTOS
from priorlab.files import write_text_atomic
from priorlab.zoo import load

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# (task, level label, operator factory (image shape, generator) -> LinearOperator)
LEVELS = [
    ("inpaint", "box 1/4 side", lambda s, g: solvers.box_inpainting(s, _centred_box(s, 4))),
    ("inpaint", "box 1/2 side", lambda s, g: solvers.box_inpainting(s, _centred_box(s, 2))),
    ("pixels", "20 %", lambda s, g: solvers.random_pixels(s, 0.2, generator=g)),
    ("pixels", "10 %", lambda s, g: solvers.random_pixels(s, 0.1, generator=g)),
    ("sr", "x2", lambda s, g: solvers.BlockAverage(s, 2)),
    ("sr", "x4", lambda s, g: solvers.BlockAverage(s, 4)),
    ("deblur", "low-pass 20 %", lambda s, g: solvers.spectral_lowpass(s, 0.2)),
    ("deblur", "low-pass 10 %", lambda s, g: solvers.spectral_lowpass(s, 0.1)),
    ("cs", "25 %", lambda s, g: solvers.compressive_sensing(s, 0.25, generator=g)),
    ("cs", "10 %", lambda s, g: solvers.compressive_sensing(s, 0.1, generator=g)),
]
BASELINE = {"inpaint": "nearest fill", "pixels": "nearest fill", "sr": "bicubic", "deblur": "pseudo-inverse",
            "cs": "pseudo-inverse"}


def _centred_box(shape, divisor: int) -> tuple[int, int, int, int]:
    _, h, w = shape
    bh, bw = h // divisor, w // divisor
    return (h - bh) // 2, (w - bw) // 2, bh, bw


def load_crops(dataset: str, channels: int, crop: int, max_images: int) -> list[tuple[str, torch.Tensor]]:
    """Centre crops (1, C, crop, crop) of the first ``max_images`` images of a set."""
    if dataset == "photos-test":
        items = [(name, load_photo(name, channels)) for name in TEST_PHOTOS[:max_images]]
    else:
        folder = DATA / dataset
        if not folder.is_dir():
            raise FileNotFoundError(f"data set not found: {folder}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".bmp", ".tif"))
        items = [(p.name, read_image(p, convert="gray" if channels == 1 else "rgb")) for p in files[:max_images]]
    out = []
    for name, x in items:
        h, w = x.shape[-2:]
        if min(h, w) < crop:
            raise ValueError(f"{dataset}/{name} is {h}x{w}, smaller than --crop {crop}")
        top, left = (h - crop) // 2, (w - crop) // 2
        out.append((name, x[None, :, top:top + crop, left:left + crop].contiguous()))
    return out


def baseline(task: str, op, x: torch.Tensor) -> torch.Tensor:
    """The simple reconstruction of each task from the measurements of x."""
    naive = op.project(x)
    if task in ("inpaint", "pixels"):
        known = op.mask.all(0).numpy()  # pixels measured in every channel
        _, (iy, ix) = ndimage.distance_transform_edt(~known, return_indices=True)
        return naive[..., torch.from_numpy(iy), torch.from_numpy(ix)]
    if task == "sr":
        s = op.factor
        low = op.measure(x) / s  # block means
        return F.interpolate(low, scale_factor=s, mode="bicubic", align_corners=False)
    return naive


def scores(img: torch.Tensor, x: torch.Tensor) -> tuple[float, float]:
    img = img.clamp(0, 1)
    return psnr_fn(img, x, data_range=1.0).item(), ssim_fn(img, x, data_range=1.0).item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prior", required=True, help="checkpoint (.ckpt) or prior name")
    p.add_argument("--datasets", nargs="+", default=["set12", "bsd68", "photos-test"])
    p.add_argument("--max-images", type=int, default=3)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--samples", type=int, default=2, help="chains per measurement (mean reported too)")
    p.add_argument("--beta", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", nargs="+", default=sorted(BASELINE), choices=sorted(BASELINE))
    p.add_argument("--out", type=Path, default=None, help="markdown report (default: print only)")
    p.add_argument("--json", type=Path, default=None, help="per-image records")
    args = p.parse_args()

    net = load(args.prior)
    channels = net.prior_config.get("channels", 1)
    records = []
    for dataset in args.datasets:
        for name, x in load_crops(dataset, channels, args.crop, args.max_images):
            for task, level, make in LEVELS:
                if task not in args.tasks:
                    continue
                op = make(tuple(x.shape[1:]), torch.Generator().manual_seed(args.seed))
                c = op.measure(x)
                base = scores(baseline(task, op, x), x)
                t0 = time.perf_counter()
                res = solvers.solve_linear(net, op, c, num_samples=args.samples, beta=args.beta,
                                           generator=torch.Generator().manual_seed(args.seed))
                seconds = time.perf_counter() - t0
                one, mean = scores(res.samples[:, 0], x), scores(res.mean, x)
                records.append(dict(dataset=dataset, image=name, task=task, level=level, baseline=base,
                                    sample=one, mean=mean, seconds=seconds, steps=res.steps.float().mean().item(),
                                    converged=bool(res.converged.all())))
                print(f"{dataset}/{name} {task} {level}: {BASELINE[task]} {base[0]:.2f} dB, sample {one[0]:.2f} dB, "
                      f"mean {mean[0]:.2f} dB, {seconds:.1f} s, {records[-1]['steps']:.0f} steps", flush=True)

    lines = [f"Prior `{args.prior}` ({channels} channel(s)); {args.crop}x{args.crop} centre crops, first "
             f"{args.max_images} image(s) of {', '.join(args.datasets)}; β = {args.beta}, {args.samples} chains; "
             f"seed {args.seed}. {dt.date.today()}, {platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} torch thread(s).", "",
             "| task | level | baseline | baseline PSNR / SSIM | sample PSNR / SSIM | "
             f"mean of {args.samples} PSNR / SSIM | s/image | steps |", "| --- " * 8 + "|"]
    for task, level, _ in LEVELS:
        rows = [r for r in records if r["task"] == task and r["level"] == level]
        if not rows:
            continue

        def avg(key, i, rows=rows):
            return float(np.mean([r[key][i] for r in rows]))

        lines.append(f"| {task} | {level} | {BASELINE[task]} | {avg('baseline', 0):.2f} / {avg('baseline', 1):.3f} | "
                     f"{avg('sample', 0):.2f} / {avg('sample', 1):.3f} | {avg('mean', 0):.2f} / {avg('mean', 1):.3f} | "
                     f"{np.mean([r['seconds'] for r in rows]):.1f} | {np.mean([r['steps'] for r in rows]):.0f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        write_text_atomic(args.out, report)
    if args.json:
        write_text_atomic(args.json, json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
