"""Fine-tuning a bundled prior on images of a new domain: before, after, from scratch, beside BM3D.

The domain is Fashion-MNIST (28×28 gray clothing on a black background, far from the BSD400
photographs that ``bf-dncnn-small-gray`` learned), read from the Debian package's IDX files and written
as PNG folders, the way a user's own images would arrive:

1. ``WORK/images/train`` (the first ``--train-images`` training images), ``WORK/images/heldout`` (the
   last ``--heldout-images`` training images: the validation folder while fine-tuning) and
   ``WORK/images/test`` (the first ``--test-images`` t10k images: evaluation only, never trained on).
2. ``priorlab fit --config configs/finetune_gray.yaml`` on those folders (patch size 24, no rescaling:
   the images are 28 px), once per learning rate of ``--lrs``, and once from random weights
   (``init_from: null``) at ``--scratch-lr`` with the same budget.
3. Denoising PSNR/SSIM on ``test`` at each σ for the prior before fine-tuning, every run, and BM3D
   (true σ) on the same noisy images (protocol of ``priorlab.benchmarks.denoising``); a markdown
   table, a JSON of the per-image records, and a figure (noisy | before | after | clean, σ₂₅₅ = 25).

Example (17 minutes with --threads 1 on a 2-core CPU that ran another job, 12 of them BM3D; --no-bm3d for 6):
    python benchmarks/finetune_domain.py --json docs/finetune_fashion_mnist.json \\
        --out docs/finetune_fashion_mnist.md --figure docs/figures/finetune_fashion_mnist.png
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import shlex
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import yaml
from PIL import Image

from priorlab import zoo
from priorlab.benchmarks.denoising import (
    DenoisingRecord,
    describe_machine,
    evaluate_bm3d,
    evaluate_denoiser,
    format_markdown_table,
    noisy_image,
    summarize,
)
from priorlab.cli import main as priorlab_main
from priorlab.datamodules.fashion_mnist import DEBIAN_ROOT, SPLIT_FILES, read_idx_images
from priorlab.files import refuse_to_replace, write_text_atomic
from priorlab.plotting import save_figure

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "finetune_gray.yaml"
DATASET = "fashion-mnist-test"


def lr_text(lr: float) -> str:
    """1e-4, 3e-4, 1.5e-4 (not 0.0001, 0.0003; up to 4 significant digits, so labels stay distinct)."""
    mantissa, exponent = f"{lr:.3e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def idx_file(root: Path, split: str) -> Path:
    for name in (SPLIT_FILES[split] + ".gz", SPLIT_FILES[split]):
        if (root / name).is_file():
            return root / name
    raise SystemExit(f"no {SPLIT_FILES[split]}[.gz] in {root}: install the Debian package dataset-fashion-mnist "
                     "or give --fmnist-root")


def write_folders(root: Path, out: Path, n_train: int, n_heldout: int, n_test: int) -> dict[str, Path]:
    """PNG folders train/heldout/test; heldout is the end of the training split, test the start of t10k."""
    train, test = read_idx_images(idx_file(root, "train")), read_idx_images(idx_file(root, "test"))
    if n_train + n_heldout > len(train) or n_test > len(test):
        raise SystemExit(f"asked for {n_train} + {n_heldout} training and {n_test} test images; the files hold "
                         f"{len(train)} and {len(test)}")
    picks = {"train": (train, range(n_train)), "heldout": (train, range(len(train) - n_heldout, len(train))),
             "test": (test, range(n_test))}
    folders = {}
    for name, (images, indices) in picks.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in indices:
            Image.fromarray(images[i, 0].numpy()).save(folder / f"{i:05d}.png")
        folders[name] = folder
    return folders


def fine_tune(name: str, lr: float, init_from: str | None, folders: dict[str, Path], runs: Path,
              epochs: int | None = None, patches: int | None = None) -> tuple[Path, float]:
    """One ``priorlab fit`` run of the fine-tuning config; returns its last checkpoint and seconds."""
    args = ["fit", "--config", str(CONFIG),
            f"--data.init_args.train_dirs=[{folders['train']}]", f"--data.init_args.val_dirs=[{folders['heldout']}]",
            "--data.init_args.patch_size=24", "--data.init_args.scales=[1.0]", f"--model.init_args.lr={lr}",
            f"--model.init_args.init_from={init_from if init_from else 'null'}",
            f"--trainer.logger.init_args.save_dir={runs}", f"--trainer.logger.init_args.name={name}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    if epochs is not None:
        args.append(f"--trainer.max_epochs={epochs}")
    if patches is not None:
        args.append(f"--data.init_args.patches_per_epoch={patches}")
    start = time.perf_counter()
    # LightningCLI warns when it is given args while sys.argv holds any (this script's)
    with contextlib.redirect_stdout(io.StringIO()), mock.patch.object(sys, "argv", ["priorlab"]):
        priorlab_main(args)
    seconds = time.perf_counter() - start
    ckpt = runs / name / "version_0" / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise SystemExit(f"run {name} wrote no {ckpt}")
    return ckpt, seconds


def results_json(records: list[dict]) -> dict:
    """Means per (method, σ) and every image's PSNR (0.01 dB) in test-image order: the per-image records
    of 8,400 denoisings would be megabytes."""
    summary = summarize(DenoisingRecord(**r) for r in records)
    means = [{"method": m, "sigma_255": s, **{k: round(v, 4) for k, v in vals.items()}}
             for (m, _, s), vals in summary.items()]
    per_image: dict[str, dict[str, list[float]]] = {}
    for r in records:
        per_image.setdefault(r["method"], {}).setdefault(f"{r['sigma_255']:g}", []).append(round(r["psnr"], 2))
    images = sorted({(r["index"], r["image"]) for r in records})
    return {"means": means, "test_images": [name for _, name in images], "psnr_per_image": per_image}


def comparison_figure(images: list[torch.Tensor], nets: dict[str, torch.nn.Module], sigma_255: float,
                      seed: int):
    """Rows: test images; columns: noisy | each network | clean, PSNR in the titles."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from priorlab.benchmarks.denoising import image_metrics, input_psnr

    cols = 2 + len(nets)
    fig, axes = plt.subplots(len(images), cols, figsize=(1.9 * cols, 2.0 * len(images) + 0.3), squeeze=False)
    for row, (i, x) in zip(axes, enumerate(images)):
        y = noisy_image(x, sigma_255, seed=seed, index=i)[None]
        panels = [(f"noisy\n{input_psnr(y[0], x):.2f} dB", y[0])]
        for label, net in nets.items():
            with torch.no_grad():
                out = net(y).clamp(0, 1)
            panels.append((f"{label}\n{image_metrics(out, x[None])[0][0]:.2f} dB", out[0]))
        panels.append(("clean", x))
        for ax, (title, img) in zip(row, panels):
            ax.imshow(img[0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle(f"Fashion-MNIST test, σ₂₅₅ = {sigma_255:g}: the BSD400 prior before and after fine-tuning",
                 fontsize=9)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prior", default="bf-dncnn-small-gray", help="the prior that configs/finetune_gray.yaml "
                   "fine-tunes (its model.init_from)")
    p.add_argument("--fmnist-root", type=Path, default=DEBIAN_ROOT, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--work", type=Path, default=None, help="folder for the PNG folders and the runs (default: "
                   "a temporary folder, deleted at the end)")
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--heldout-images", type=int, default=100)
    p.add_argument("--test-images", type=int, default=200)
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3],
                   help="fine-tuning learning rates (the config's is 3e-4)")
    p.add_argument("--scratch-lr", type=float, default=1e-3, help="learning rate of the from-scratch run "
                   "(0: no such run)")
    p.add_argument("--epochs", type=int, default=None, help="override the config's max_epochs (smoke tests)")
    p.add_argument("--patches", type=int, default=None, help="override the config's patches_per_epoch (smoke tests)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[5, 10, 15, 25, 50, 75, 100])
    p.add_argument("--seed", type=int, default=0, help="noise seed of the evaluation")
    p.add_argument("--bm3d", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=None, help="markdown report")
    p.add_argument("--json", type=Path, default=None, help="per-image records and run times")
    p.add_argument("--figure", type=Path, default=None, help="PNG: noisy | before | after | clean at σ₂₅₅ = 25")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = p.parse_args(argv)
    refuse_to_replace(args.out, args.json, args.figure, overwrite=args.overwrite)
    if args.threads:
        torch.set_num_threads(args.threads)
    if len({lr_text(lr) for lr in args.lrs}) != len(args.lrs) or min(args.lrs) <= 0:
        raise SystemExit(f"--lrs must be distinct positive learning rates, got {args.lrs}")
    if args.prior != "bf-dncnn-small-gray":
        raise SystemExit("configs/finetune_gray.yaml fine-tunes bf-dncnn-small-gray (architecture bf_dncnn_small); "
                         "for another prior copy the config and set init_from, arch and sigma_schedule")

    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="priorlab_finetune_")))
        for sub in ("images", "runs"):
            if args.work is not None and (work / sub).exists():
                raise SystemExit(f"{work / sub} exists: give a new --work folder (nothing in it is replaced)")
        folders = write_folders(args.fmnist_root, work / "images", args.train_images, args.heldout_images,
                                args.test_images)
        runs, times, nets = work / "runs", {}, {"before fine-tuning": zoo.load(args.prior)}
        plan = [(f"fine-tuned lr {lr_text(lr)}", lr, args.prior) for lr in args.lrs]
        if args.scratch_lr > 0:
            plan.append((f"from scratch lr {lr_text(args.scratch_lr)}", args.scratch_lr, None))
        for label, lr, init in plan:
            print(f"fit: {label} ...", flush=True)
            ckpt, times[label] = fine_tune(label.replace(" ", "_"), lr, init, folders, runs, args.epochs,
                                           args.patches)
            nets[label] = zoo.load(str(ckpt))
            print(f"fit: {label}: {times[label]:.0f} s", flush=True)

        test = sorted(folders["test"].glob("*.png"))
        images = [torch.from_numpy(np.asarray(Image.open(f), dtype=np.float32) / 255.0)[None] for f in test]
        names = [f.stem for f in test]
        records = []
        for label, net in nets.items():
            records += evaluate_denoiser(net, images, args.sigmas, names=names, method=label, dataset=DATASET,
                                         seed=args.seed, batch_size=50)
        if args.bm3d:
            print("BM3D ...", flush=True)
            records += evaluate_bm3d(images, args.sigmas, names=names, dataset=DATASET, seed=args.seed,
                                     num_threads=1)
        summary = summarize(records)
        methods = [*nets, *(["BM3D"] if args.bm3d else [])]
        table = format_markdown_table(summary, published=(), datasets=[DATASET], methods=methods)
        command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
        lines = [f"# Fine-tuning {args.prior} on Fashion-MNIST", "",
                 f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC", f"- command: `{command}`",
                 "- machine: {cpu} ({cpu_count} cores), {platform}; Python {python}, torch {torch}; "
                 "CPU only".format(**describe_machine("cpu")),
                 f"- data: {args.train_images} training images, {args.heldout_images} held-out (validation), "
                 f"test = the first {args.test_images} t10k images",
                 "- fit seconds: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()), "", table]
        print("\n".join(lines[-1:]))
        if args.out:
            write_text_atomic(args.out, "\n".join(lines) + "\n")
        if args.json:
            payload = {"prior": args.prior, "config": str(CONFIG.relative_to(REPO)), "command": command,
                       "machine": describe_machine("cpu"), "fit_seconds": times, "sigmas_255": args.sigmas,
                       "seed": args.seed, **results_json([asdict(r) for r in records])}
            write_text_atomic(args.json, json.dumps(payload) + "\n")
        if args.figure:
            config_lr = yaml.safe_load(CONFIG.read_text())["model"]["init_args"]["lr"]
            pick = {k: v for k, v in nets.items() if k in ("before fine-tuning", f"fine-tuned lr {lr_text(config_lr)}")}
            save_figure(comparison_figure(images[:4], pick or nets, 25.0, args.seed), args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
