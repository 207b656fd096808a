"""Denoising quality of trained checkpoints beside BM3D and the published BF-DnCNN numbers.

Every method sees the same noisy images (one realization per image and σ, seeded; see
``priorlab.benchmarks.denoising``). Results go to a markdown report (and optionally a JSON file with
every per-image record); BM3D results are cached in ``benchmarks/.cache/bm3d.json`` so another
checkpoint does not redo them.

Examples:
    python benchmarks/denoise_quality.py --ckpt runs/bf_dncnn/checkpoints/last.ckpt \\
        --datasets bsd68 set12 photos-test --sigmas 5 10 15 25 50 75 100 --json
    python benchmarks/denoise_quality.py --ckpt a.ckpt --no-bm3d --max-images 2 --sigmas 25 --out /tmp/q.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from priorlab.benchmarks.denoising import (
    DenoisingRecord,
    PublishedResult,
    describe_machine,
    evaluate_bm3d,
    evaluate_denoiser,
    format_markdown_table,
    published_like,
    summarize,
)
from priorlab.files import refuse_to_replace, write_text_atomic

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CACHE = REPO / "benchmarks" / ".cache" / "bm3d.json"
PHOTOS_TEST = "photos-test"
# Native mode of the standard sets (../shared/data/README.md); a model with the other channel count
# gets a converted copy (gray = luma) under a suffixed label, so results never mix image versions.
NATIVE = {"bsd68": 1, "set12": 1, "kodak23_gray": 1, "bsd400": 1,
          "bsd100_color": 3, "set14_color": 3, "set5_color": 3}


@dataclass(frozen=True)
class Model:
    """A checkpoint to evaluate."""

    label: str
    path: Path
    net: torch.nn.Module
    channels: int
    config: dict[str, Any]


@dataclass(frozen=True)
class Dataset:
    """Test images as one channel count sees them."""

    label: str
    name: str
    channels: int
    source: str
    names: list[str]
    images: list[torch.Tensor]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", "--prior", dest="ckpt", action="append", required=True, type=str,
                   help="priorlab checkpoint (.ckpt) or prior (name, hf-hub:..., local-dir:...); repeat for several")
    p.add_argument("--name", action="append", default=None,
                   help="label of each --ckpt, in order (default: run folder / file name)")
    p.add_argument("--datasets", nargs="+", default=["bsd68", "set12", PHOTOS_TEST],
                   help=f"folders of {DATA} ({', '.join(NATIVE)}) or {PHOTOS_TEST} (built-in test photos)")
    p.add_argument("--sigmas", nargs="+", type=float, default=[5, 10, 15, 25, 50, 75, 100],
                   help="noise levels on the 0-255 scale")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--bm3d", action=argparse.BooleanOptionalAction, default=True,
                   help="run BM3D (bm3d package, true σ) on the same noisy images")
    p.add_argument("--bm3d-profile", default="np", help="BM3D profile (np, refilter, vn, high...)")
    p.add_argument("--bm3d-threads", type=int, default=0,
                   help="BM3D's own threads (0 = all cores; 1 is faster on a busy machine, bit-reproducible)")
    p.add_argument("--clip-input", action="store_true",
                   help="clip noisy inputs to [0, 1] (default: not clipped; outputs are always clamped)")
    p.add_argument("--max-images", type=int, default=None,
                   help="first N images of each dataset (quick runs)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="images per forward pass (same-size images only)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-root", type=Path, default=DATA,
                   help="folder holding the standard sets (bsd68/, set12/, ...; default: ../shared/data)")
    p.add_argument("--tag", default=None,
                   help="report name: docs/denoise_quality_<tag>.md (default: first checkpoint label)")
    p.add_argument("--out", type=Path, default=None,
                   help="markdown report (default: docs/denoise_quality_<tag>.md)")
    p.add_argument("--json", nargs="?", const="", default=None, metavar="PATH",
                   help="also write every per-image record as JSON (default path: the report's, .json)")
    p.add_argument("--cache", type=Path, default=CACHE, help="BM3D result cache (JSON)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p.parse_args(argv)


# ---- inputs ----------------------------------------------------------------------------------------
def checkpoint_label(spec: str) -> str:
    """``<run>/<file stem>`` for Lightning's ``<run>/checkpoints/<file>.ckpt`` layout, the stem of other
    checkpoints, else the prior's name or source as given."""
    if not spec.endswith(".ckpt"):
        return spec
    path = Path(spec)
    if path.parent.name == "checkpoints" and path.parent.parent.name:
        return f"{path.parent.parent.name}/{path.stem}"
    return path.stem


def load_models(paths: list[str], names: list[str] | None, device: str) -> list[Model]:
    from priorlab.zoo import load

    if names is not None and len(names) != len(paths):
        raise SystemExit(f"--name given {len(names)} times for {len(paths)} --ckpt")
    models = []
    for k, path in enumerate(paths):
        net = load(path, map_location="cpu").to(device)
        config = dict(getattr(net, "prior_config", {}))
        if config.get("kind", "denoiser") != "denoiser":
            raise SystemExit(f"{path} holds a {config['kind']!r} model; this benchmark needs a denoiser")
        label = names[k] if names else checkpoint_label(path)
        models.append(Model(label=label, path=path, net=net, channels=int(config.get("channels", 1)),
                            config=config))
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise SystemExit(f"checkpoint labels collide: {labels}; give --name for each --ckpt")
    return models


def load_dataset(name: str, channels: int, max_images: int | None, root: Path = DATA) -> Dataset | None:
    """The images of a dataset for a channel count, or None when that pairing makes no sense."""
    if name == PHOTOS_TEST:
        from priorlab.datamodules.photos import list_photos, load_photo

        names = list_photos(PHOTOS_TEST, channels=channels)[:max_images]
        images = [load_photo(n, channels) for n in names]
        label = PHOTOS_TEST if channels == 1 else f"{PHOTOS_TEST}-rgb"
        return Dataset(label, name, channels, "built-in photos (priorlab.datamodules.photos)", names, images)
    from priorlab.datamodules.images import list_image_files, read_image

    folder = Path(root) / name
    if not folder.is_dir():
        raise SystemExit(f"dataset folder not found: {folder} (see ../shared/data/README.md)")
    native = NATIVE.get(name)
    if native == 1 and channels == 3:
        return None  # a color model on gray-only images measures nothing about color
    files = list_image_files(folder)[:max_images]
    images = [read_image(f, channels) for f in files]
    label = name if native in (None, channels) else f"{name}-{'gray' if channels == 1 else 'rgb'}"
    return Dataset(label, name, channels, str(folder), [f.name for f in files], images)


# ---- outputs ---------------------------------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    write_text_atomic(path, text)


def load_cache(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        print(f"warning: ignoring unreadable BM3D cache {path}", file=sys.stderr)
        return {}
    return data if isinstance(data, dict) else {}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def bm3d_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bm3d")
    except PackageNotFoundError:
        return "not installed"


def published_columns(models: list[Model], datasets: list[Dataset]) -> list[PublishedResult]:
    """Published curves of networks trained like the evaluated ones (same σ range, bias) on these test sets."""
    out: list[PublishedResult] = []
    for m in models:
        for d in datasets:
            out += [p for p in published_like(d.label, m.config) if p not in out]
    return out


def render_report(args: argparse.Namespace, models: list[Model], datasets: list[Dataset],
                  records: list[DenoisingRecord], started: dt.datetime, seconds: float) -> str:
    machine = describe_machine(args.device)
    gpu = f", GPU {machine['gpu']} (CUDA {machine['cuda']})" if "gpu" in machine else ", no GPU"
    summary = summarize(records)
    methods = [m.label for m in models] + (["BM3D"] if args.bm3d else [])
    clip = ("clipped to [0, 1] before denoising (input PSNR is that of the clipped image)" if args.clip_input
            else "not clipped (the network and BM3D see y = x + σz as is; input PSNR of that y)")
    lines = [
        f"# Denoising quality: {', '.join(m.label for m in models)}",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')} ({seconds:.0f} s)",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
        f"- machine: {machine['platform']}, {machine['cpu']} ({machine['cpu_count']} cores){gpu}; "
        f"Python {machine['python']}, torch {machine['torch']}; priorlab {git_commit()}; "
        f"device `{args.device}`",
        f"- noise: one realization per (image, σ₂₅₅), z ~ N(0, I) drawn on the CPU in float32 by a "
        f"torch.Generator seeded from sha256(seed, image index, σ₂₅₅), seed = {args.seed}; every method "
        "sees the same noisy images",
        f"- noisy input: {clip}",
        "- metrics: outputs clamped to [0, 1]; PSNR (peak 1) and SSIM (torchmetrics, Gaussian window 11, "
        "σ 1.5, data range 1) per image in float64, averaged over images; cells read `PSNR dB / SSIM`",
    ]
    if args.bm3d:
        lines.append(f"- BM3D: `bm3d` {bm3d_version()}, profile `{args.bm3d_profile}`, true σ; `bm3d.bm3d` "
                     "for gray, `bm3d.bm3d_rgb` for color")
    for m in models:
        arch = m.config.get("arch_config", {}).get("architecture", "?")
        rng = m.config.get("sigma_range_255", "?")
        lines.append(f"- model `{m.label}`: {m.path}, {arch}, {m.channels} channel(s), trained σ₂₅₅ ∈ {rng}")
    for d in datasets:
        kind = "gray (luma)" if d.channels == 1 else "RGB"
        lines.append(f"- dataset `{d.label}`: {len(d.images)} image(s), {kind}, from {d.source}")
    shown = published_columns(models, datasets)
    for p in shown:
        lines.append(f"- published `{p.method}` on {p.dataset}: {p.source}")
    if any(p.psnr_in for p in shown):
        lines.append("- the published input PSNRs (e.g. 28.27 dB at σ₂₅₅ = 10, 10.31 dB at 100) exceed the "
                     "nominal −20·log10(σ) and suggest clipped inputs there; compare output PSNRs")
    lines += ["", "## Output PSNR (dB) / SSIM", ""]
    for d in datasets:  # one table per dataset: rows σ, columns methods (one wide table is unreadable)
        lines += [f"### {d.label}", "", format_markdown_table(summary, datasets=[d.label], methods=methods,
                                                                 published=shown)]
    lines += ["## Mean time per image (s)", "", "| method | " + " | ".join(d.label for d in datasets) + " |",
              "|---|" + "---|" * len(datasets)]
    for m in methods:
        cells = []
        for d in datasets:
            secs = [r.seconds for r in records if r.method == m and r.dataset == d.label]
            cells.append(f"{sum(secs) / len(secs):.3g}" if secs else "—")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("")
    if args.bm3d:
        lines.append("BM3D times are those of the run that filled the cache (it may be another machine's).")
        lines.append("")
    return "\n".join(lines)


# ---- main ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    models = load_models(args.ckpt, args.name, args.device)
    tag = args.tag or re.sub(r"[^A-Za-z0-9_.-]+", "_", models[0].label)
    out = args.out or REPO / "docs" / f"denoise_quality_{tag}.md"
    json_out = None if args.json is None else Path(args.json) if args.json else out.with_suffix(".json")
    refuse_to_replace(out, json_out, overwrite=args.overwrite)

    datasets: list[Dataset] = []
    for name in args.datasets:
        for channels in sorted({m.channels for m in models}):
            d = load_dataset(name, channels, args.max_images, args.data_root)
            if d is None:
                print(f"note: {name} is gray only; skipped for the {channels}-channel model(s)",
                      file=sys.stderr)
            else:
                datasets.append(d)

    per_image = len(args.sigmas)
    total = sum(len(d.images) * per_image * (sum(m.channels == d.channels for m in models) + args.bm3d)
                for d in datasets)
    cache = load_cache(args.cache) if args.bm3d else {}
    saved = {"n": len(cache), "at": time.monotonic()}

    def save_cache(force: bool = False) -> None:
        # Saved every half minute too, so an interrupted BM3D run keeps what it has done.
        if args.bm3d and len(cache) != saved["n"] and (force or time.monotonic() - saved["at"] > 30):
            write_atomic(args.cache, json.dumps(cache, indent=0, sort_keys=True))
            saved.update(n=len(cache), at=time.monotonic())

    records: list[DenoisingRecord] = []
    with tqdm(total=total, unit="img", dynamic_ncols=True) as bar:
        def progress_for(method: str) -> Callable[[DenoisingRecord], None]:
            def progress(rec: DenoisingRecord) -> None:
                bar.set_postfix_str(f"{method} {rec.dataset} σ={rec.sigma_255:g} {rec.psnr:.2f} dB",
                                    refresh=False)
                bar.update(1)
                save_cache()
            return progress

        for d in datasets:
            for m in models:
                if m.channels != d.channels:
                    continue
                if d.images:  # untimed first call: CUDA/cuDNN initialization is not the model's speed
                    with torch.inference_mode():
                        m.net(d.images[0][None].to(args.device))
                records += evaluate_denoiser(m.net, d.images, args.sigmas, names=d.names, method=m.label,
                                             dataset=d.label, seed=args.seed, clip_input=args.clip_input,
                                             batch_size=args.batch_size, device=args.device,
                                             progress=progress_for(m.label))
            if args.bm3d:
                try:
                    records += evaluate_bm3d(d.images, args.sigmas, names=d.names, dataset=d.label,
                                             seed=args.seed, clip_input=args.clip_input,
                                             profile=args.bm3d_profile, num_threads=args.bm3d_threads,
                                             cache=cache,
                                             progress=progress_for("BM3D"))
                finally:
                    save_cache(force=True)

    report = render_report(args, models, datasets, records, started, time.perf_counter() - t0)
    write_atomic(out, report)
    print(report)
    print(f"wrote {out}")
    if json_out is not None:
        payload = {"machine": describe_machine(args.device), "command": ["python", *sys.argv], "seed": args.seed,
                   "clip_input": args.clip_input, "sigmas_255": args.sigmas,
                   "models": {m.label: {"path": str(m.path), "prior_config": m.config} for m in models},
                   "records": [asdict(r) for r in records]}
        write_atomic(json_out, json.dumps(payload, indent=1, default=str))
        print(f"wrote {json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
