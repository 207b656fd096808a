"""Linear inverse problems: Algorithm 2 with a trained prior beside simple baselines.

Every image is centre-cropped to --crop pixels (fixed crops, no randomness) and converted to the
prior's channel count (gray = luma). Each task runs at two levels. Baselines: nearest-pixel fill
(inpainting, random pixels), bicubic upsampling of the block means (super-resolution) and the
pseudo-inverse MMᵀx (spectral low-pass, compressive sensing). PSNR/SSIM (torchmetrics) are
computed against the crop with outputs clipped to [0, 1]; seconds are wall-clock per image for all
--samples chains together.

Peers (benchmarks/deepinv_peers.py, needs the `bench` extra): deepinv's DPS, DiffPIR and DDRM,
driven by the same denoiser and the same measurement operators (as deepinv physics), run on every
cell of the same table. ``--calibration`` instead runs the issue's calibration cells (camera and
grace_hopper, 30 % random pixels and 4× block averaging), with two more DPS guidance settings.

Example (docs/inverse_problems.md):
    OMP_NUM_THREADS=1 python benchmarks/inverse_problems.py --prior bf-unet-small-gray \\
        --datasets set12 bsd68 photos-test --max-images 2 --crop 64 \\
        --out /tmp/inverse.md --json /tmp/inverse.json
  Runs split by set (--datasets, --start, --max-images) are combined with --merge RUN.json ....
"""

from __future__ import annotations

import argparse
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
from priorlab.files import refuse_to_replace, write_text_atomic
from priorlab.zoo import load

try:  # the peers need deepinv (the `bench` extra); without it only ours and the baselines run
    import deepinv_peers
except ImportError:  # pragma: no cover - depends on the environment
    deepinv_peers = None

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
    # colour priors only: one colour per pixel, Bayer RGGB and a random cone-like R:G:B = 60:30:10 mosaic
    ("demosaic", "Bayer", lambda s, g: solvers.bayer_demosaic(s)),
    ("demosaic", "cones 60/30/10", lambda s, g: solvers.random_mosaic(s, generator=g)),
]
COLOR_ONLY = {"demosaic"}
# The calibration cells: two 64×64 gray crops, 30 % random pixels kept and 4× block averaging.
CALIBRATION_IMAGES = ("camera", "grace_hopper")
CALIBRATION_LEVELS = [
    ("pixels", "30 %", lambda s, g: solvers.random_pixels(s, 0.3, generator=g)),
    ("sr", "x4", lambda s, g: solvers.BlockAverage(s, 4)),
]
BASELINE = {"inpaint": "nearest fill", "pixels": "nearest fill", "sr": "bicubic", "deblur": "pseudo-inverse",
            "cs": "pseudo-inverse", "demosaic": "bilinear"}


def _centred_box(shape, divisor: int) -> tuple[int, int, int, int]:
    _, h, w = shape
    bh, bw = h // divisor, w // divisor
    return (h - bh) // 2, (w - bw) // 2, bh, bw


def load_crops(dataset: str, channels: int, crop: int, max_images: int, names: tuple[str, ...] | None = None,
               start: int = 0) -> list[tuple[str, torch.Tensor]]:
    """Centre crops (1, C, crop, crop) of images start … start + max_images − 1 of a set (sorted by file
    name; photos-test in its fixed order), or of the named photos."""
    if dataset == "photos-test":
        items = [(name, load_photo(name, channels)) for name in (names or TEST_PHOTOS[start:start + max_images])]
    else:
        folder = DATA / dataset
        if not folder.is_dir():
            raise FileNotFoundError(f"data set not found: {folder}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".bmp", ".tif"))
        items = [(p.name, read_image(p, convert="gray" if channels == 1 else "rgb"))
                 for p in files[start:start + max_images]]
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
    if task == "demosaic":
        return bilinear_demosaic(op.mask, naive)
    if task == "sr":
        s = op.factor
        low = op.measure(x) / s  # block means
        return F.interpolate(low, scale_factor=s, mode="bicubic", align_corners=False)
    return naive


def bilinear_demosaic(mask: torch.Tensor, mosaic: torch.Tensor) -> torch.Tensor:
    """Per channel, the weighted mean of the measured values in each 3×3 window (weights 4 / 2 / 1 for the
    centre / edge / corner neighbours): bilinear demosaicing for a Bayer mosaic, and its natural extension to
    any mosaic. A pixel with no measured neighbour of a channel takes the nearest measured value; measured
    values are kept as they are.

    Args:
        mask: (C, H, W) boolean, the measured entries.
        mosaic: (B, C, H, W), zero where not measured.
    """
    c = mask.shape[0]
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=mosaic.dtype)
    kernel = kernel.expand(c, 1, 3, 3)
    m = mask.to(mosaic.dtype)[None]
    num = F.conv2d(mosaic * m, kernel, padding=1, groups=c)
    den = F.conv2d(m, kernel, padding=1, groups=c)
    out = torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))
    for ch in range(c):  # pixels with no measured neighbour of this channel: nearest measured value
        hole = (den[0, ch] == 0).numpy()
        if hole.any():
            _, (iy, ix) = ndimage.distance_transform_edt(~mask[ch].numpy(), return_indices=True)
            out[:, ch][:, hole] = mosaic[:, ch][:, torch.from_numpy(iy[hole]), torch.from_numpy(ix[hole])]
    return torch.where(mask[None], mosaic, out)


def scores(img: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    img = img.clamp(0, 1).to(torch.float64)
    x = x.to(torch.float64)
    return dict(psnr=psnr_fn(img, x, data_range=1.0).item(), ssim=ssim_fn(img, x, data_range=1.0).item())


def run_cell(net, task: str, op, x: torch.Tensor, peers: list[str], args) -> dict:
    """Every method on one (image, task, level): {method: {psnr, ssim, seconds}} plus our diagnostics."""
    c = op.measure(x)
    out: dict = {}
    t0 = time.perf_counter()
    base = baseline(task, op, x)
    out["baseline"] = dict(scores(base, x), seconds=time.perf_counter() - t0)
    t0 = time.perf_counter()
    res = solvers.solve_linear(net, op, c, num_samples=args.samples, beta=args.beta,
                               generator=torch.Generator().manual_seed(args.seed))
    seconds = time.perf_counter() - t0  # all chains together, as a user running --samples would wait
    out["ours"] = dict(scores(res.samples[:, 0], x), seconds=seconds, steps=res.steps.float().mean().item(),
                       converged=bool(res.converged.all()))
    out["ours mean"] = dict(scores(res.mean, x), seconds=seconds)
    for name in peers:
        try:
            img, seconds = deepinv_peers.run_peer(name, net, op, c, args.seed)
        except NotImplementedError as err:  # no exact deepinv form of this operator: the cell stays empty
            out[name] = dict(skipped=str(err))
            continue
        out[name] = dict(scores(img, x), seconds=seconds)
    return out


def _cell(m: dict | None) -> str:
    if not m or "psnr" not in m:
        return "—"
    return f"{m['psnr']:.2f} / {m['ssim']:.3f} / {m['seconds']:.1f}"


def _avg(records: list[dict], method: str, key: str) -> float:
    vals = [r["methods"][method][key] for r in records if key in r["methods"].get(method, {})]
    return float(np.mean(vals)) if vals else float("nan")


def report(records: list[dict], methods: list[str], datasets: list[str], levels, header: str) -> str:
    """Markdown: one row per task × level × dataset (mean over images), then averages per dataset and overall."""
    lines = [header, "", "Cells: PSNR (dB) / SSIM / seconds per image, mean over the images of the row.", "",
             "| task | level | dataset | n | " + " | ".join(methods) + " |", "|---" * (4 + len(methods)) + "|"]
    for task, level, _ in levels:
        for dataset in datasets:
            rows = [r for r in records if (r["task"], r["level"], r["dataset"]) == (task, level, dataset)]
            if not rows:
                continue
            cells = [_cell({k: _avg(rows, m, k) for k in ("psnr", "ssim", "seconds")}) for m in methods]
            lines.append(f"| {task} | {level} | {dataset} | {len(rows)} | " + " | ".join(cells) + " |")
    lines += ["", "Averages over all cells of each dataset, and over everything:", "",
              "| dataset | cells | " + " | ".join(methods) + " |", "|---" * (2 + len(methods)) + "|"]
    for label, rows in [(d, [r for r in records if r["dataset"] == d]) for d in datasets] + [("all", records)]:
        if rows:
            cells = [_cell({k: _avg(rows, m, k) for k in ("psnr", "ssim", "seconds")}) for m in methods]
            lines.append(f"| {label} | {len(rows)} | " + " | ".join(cells) + " |")
    # The targets, per task × level (all datasets together).
    lines += ["", "Targets: ours (one sample) ahead of the baseline per task × level; mean PSNR of ours vs the best "
              "deepinv peer:", ""]
    for task, level, _ in levels:
        rows = [r for r in records if (r["task"], r["level"]) == (task, level)]
        if rows:
            d = _avg(rows, "ours", "psnr") - _avg(rows, "baseline", "psnr")
            lines.append(f"- {task} {level} ({BASELINE[task]}): ours − baseline = {d:+.2f} dB")
    peers = [m for m in methods if m not in ("baseline", "ours", "ours mean")]
    if peers:
        best = max(peers, key=lambda m: _avg(records, m, "psnr"))
        lines.append(f"- average PSNR: ours {_avg(records, 'ours', 'psnr'):.2f} dB (mean of chains "
                     f"{_avg(records, 'ours mean', 'psnr'):.2f}), best peer {best} "
                     f"{_avg(records, best, 'psnr'):.2f} dB")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prior", required=True, help="checkpoint (.ckpt) or prior name")
    p.add_argument("--datasets", nargs="+", default=["set12", "bsd68", "photos-test"])
    p.add_argument("--max-images", type=int, default=3)
    p.add_argument("--start", type=int, default=0, help="index of the first image of each set (to split a run)")
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--samples", type=int, default=2, help="chains per measurement (mean reported too)")
    p.add_argument("--beta", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", nargs="+", default=sorted(BASELINE), choices=sorted(BASELINE))
    p.add_argument("--peers", nargs="*", default=None,
                   help="deepinv peers to run (default: DPS DiffPIR DDRM when deepinv is installed)")
    p.add_argument("--calibration", action="store_true",
                   help="run the issue's calibration cells (camera, grace_hopper; pixels 30 %%, sr x4) instead, "
                        "with the extra DPS guidance settings")
    p.add_argument("--merge", type=Path, nargs="+", default=None,
                   help="no run: combine the --json files of earlier runs (e.g. datasets run in parallel) into "
                        "one table")
    p.add_argument("--out", type=Path, default=None, help="markdown report (default: print only)")
    p.add_argument("--json", type=Path, default=None, help="per-image records")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = p.parse_args()
    refuse_to_replace(args.out, args.json, overwrite=args.overwrite)
    torch.set_num_threads(1)  # the documented timings are single-threaded (OMP_NUM_THREADS=1 as well)
    if args.merge:
        return merge(args)

    if args.peers is None:
        args.peers = list(deepinv_peers.PEERS) if deepinv_peers else []
    if args.peers and deepinv_peers is None:
        raise SystemExit("the deepinv peers need deepinv: pip install 'priorlab[bench]'")
    if args.calibration:
        args.datasets, levels = ["photos-test"], CALIBRATION_LEVELS
        args.peers = args.peers + list(deepinv_peers.DPS_VARIANTS)
    else:
        levels = [lv for lv in LEVELS if lv[0] in args.tasks]

    net = load(args.prior)
    channels = net.prior_config.get("channels", 1)
    if channels == 1:  # demosaicing needs colour images
        levels = [lv for lv in levels if lv[0] not in COLOR_ONLY]
    command = vars(args) | dict(out=str(args.out), json=str(args.json))
    settings = {m: deepinv_peers.PEER_SETTINGS.get(m, "") for m in args.peers} if deepinv_peers else {}
    records = []
    t_start = time.perf_counter()
    for dataset in args.datasets:
        names = CALIBRATION_IMAGES if args.calibration else None
        for name, x in load_crops(dataset, channels, args.crop, args.max_images, names, args.start):
            for task, level, make in levels:
                op = make(tuple(x.shape[1:]), torch.Generator().manual_seed(args.seed))
                methods = run_cell(net, task, op, x, args.peers, args)
                records.append(dict(dataset=dataset, image=name, task=task, level=level, methods=methods))
                if args.json:  # after every cell, so that an interrupted run keeps what it measured
                    write_text_atomic(args.json, json.dumps(dict(command=command, peer_settings=settings,
                                                                 records=records, complete=False), indent=1))
                print(f"{dataset}/{name} {task} {level}: " + ", ".join(
                    f"{m} {v['psnr']:.2f} dB {v['seconds']:.1f} s" for m, v in methods.items() if "psnr" in v),
                    flush=True)

    methods = ["baseline", "ours", "ours mean"] + args.peers
    header = (f"Prior `{args.prior}` ({channels} channel(s)); {args.crop}x{args.crop} centre crops of "
              + ("camera and grace_hopper (calibration)" if args.calibration else
                 f"{args.max_images} image(s) from index {args.start} of {', '.join(args.datasets)}")
              + f"; ours: β = {args.beta}, {args.samples} chains (`ours` = first chain, `ours mean` = their mean; "
              f"seconds for all chains together); seed {args.seed}; {platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} torch thread(s); total {time.perf_counter() - t_start:.0f} s.")
    text = report(records, methods, args.datasets, levels, header)
    print(text)
    if args.out:
        write_text_atomic(args.out, text)
    if args.json:
        write_text_atomic(args.json, json.dumps(dict(command=command, peer_settings=settings, records=records,
                                                     complete=True, seconds=time.perf_counter() - t_start),
                                                indent=1))


def merge(args) -> None:
    """One report from several runs' JSON files (same prior and settings; datasets in the order given)."""
    runs = [json.loads(path.read_text()) for path in args.merge]
    records = [r for run in runs for r in run["records"]]
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    methods = list(dict.fromkeys(m for r in records for m in r["methods"]))
    cells = {(r["task"], r["level"]) for r in records}
    levels = list({lv[:2]: lv for lv in CALIBRATION_LEVELS + LEVELS if lv[:2] in cells}.values())  # unique cells
    levels.sort(key=lambda lv: [x[:2] for x in LEVELS + CALIBRATION_LEVELS].index(lv[:2]))
    header = "Merged from " + "; ".join(
        f"`{' '.join(f'--{k} {v}' for k, v in run['command'].items() if k in ('datasets', 'start', 'max_images'))}`"
        for run in runs) + f" (prior `{runs[0]['command']['prior']}`, crop {runs[0]['command']['crop']}, "  \
        f"β = {runs[0]['command']['beta']}, {runs[0]['command']['samples']} chains, seed {runs[0]['command']['seed']})."
    text = report(records, methods, datasets, levels, header)
    print(text)
    if args.out:
        write_text_atomic(args.out, text)
    if args.json:
        write_text_atomic(args.json, json.dumps(dict(merged=[str(p) for p in args.merge],
                                                     peer_settings=runs[0]["peer_settings"], records=records),
                                                indent=1))


if __name__ == "__main__":
    main()
