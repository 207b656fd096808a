"""``priorlab export``: a training checkpoint → the published folder (config.json, weights, model card)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def build_parser():
    from jsonargparse import ArgumentParser

    p = ArgumentParser(prog="priorlab export", description=(
        "Turn a checkpoint written by `priorlab fit` (its EMA weights when the run averaged them; a weights-only "
        "checkpoint holds the last step's) into a prior folder: config.json, "
        "model.safetensors and README.md (the model card, with the measured metrics). The card's Training section "
        "starts from what the checkpoint records (training data as given to the datamodule, patch size, scales, "
        "batch, epochs and steps, learning rate and schedule, EMA; precision from the run's config.yaml); "
        "--data and --training override it. Publish it with `priorlab hub push`, load it with "
        "zoo.load('local-dir:DIR')."))
    p.add_argument("--ckpt", type=str, required=True, help="checkpoint written by `priorlab fit` (.ckpt)")
    p.add_argument("--out", type=str, required=True, help="output folder (must be new or empty)")
    p.add_argument("--name", type=str | None, default=None, help="the prior's name, e.g. bf-dncnn-gray")
    p.add_argument("--metrics", type=str, nargs="+", default=[], help=(
        "JSON file(s) of measured results: outputs of benchmarks/denoise_quality.py --json, or lists of "
        "flat records (dataset, sigma_255, psnr, ssim, bm3d_psnr, ...)"))
    p.add_argument("--model_label", type=str | None, default=None,
                   help="which method of the --metrics benchmark JSON is this checkpoint (default: the only one)")
    p.add_argument("--training", type=str | None, default=None, help=(
        "JSON file of training provenance (data, recipe, command, hardware, duration, date...); its keys replace "
        "those read from the checkpoint (data, batches, length, optimizer, sigma_schedule, ema, precision), and a "
        "key set to null removes one"))
    p.add_argument("--data", type=str | None, default=None,
                   help="training data, one line (default: the sources recorded in the checkpoint)")
    p.add_argument("--summary", type=str | None, default=None, help="first paragraph of the card")
    p.add_argument("--limitations", type=str | None, default=None,
                   help="the card's limitations paragraph (default: a generic one for natural-image priors)")
    p.add_argument("--timm_name", type=str | None, default=None, help="arch.tag when the prior has a timm name")
    p.add_argument("--load_spec", type=str | None, default=None, help=(
        "what the card's examples pass to zoo.load / --prior (default: local-dir:OUT); for a folder you will "
        "push, hf-hub:ORG/NAME"))
    p.add_argument("--overwrite", action="store_true",
                   help="replace config.json, model.safetensors and README.md in an existing folder")
    return p


def _read_json(path: str, what: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} file {p} is not valid JSON: {err}") from err


def metrics_from_benchmark(payload: dict[str, Any], label: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """Card metrics (per dataset and σ) from the JSON of ``benchmarks/denoise_quality.py``.

    BM3D and published numbers on the same dataset and σ are put beside the model's; published numbers
    only of networks trained like this one (same σ range, bias-free or biased, as recorded in the
    benchmark JSON's ``models``), so a [0, 10] net is never set beside a [0, 100] paper curve.

    Returns:
        (metrics, the command that measured them).
    """
    from priorlab.benchmarks.denoising import DenoisingRecord, published_like, summarize

    try:
        records = [DenoisingRecord(**r) for r in payload["records"]]
    except (KeyError, TypeError) as err:
        raise ValueError(f"not a denoise_quality benchmark JSON (records): {err}") from err
    methods = sorted({r.method for r in records} - {"BM3D"})
    if label is None:
        if len(methods) != 1:
            raise ValueError(f"the benchmark JSON holds several models {methods}; choose one with --model_label")
        label = methods[0]
    elif label not in methods:
        raise ValueError(f"--model_label {label!r} is not in the benchmark JSON (it has {methods})")
    summary = summarize(records)
    info = ((payload.get("models") or {}).get(label) or {}).get("prior_config") or {}
    out = []
    for (method, dataset, sigma), s in sorted(summary.items()):
        if method != label:
            continue
        row: dict[str, Any] = {"dataset": dataset, "split": "test", "sigma_255": sigma, "images": int(s["n"]),
                               "noise_seed": payload.get("seed"), "psnr_in": s["psnr_in"], "psnr": s["psnr"],
                               "ssim": s["ssim"]}
        bm3d = summary.get(("BM3D", dataset, sigma))
        if bm3d is not None and bm3d["n"] == s["n"]:
            row.update(bm3d_psnr=bm3d["psnr"], bm3d_ssim=bm3d["ssim"])
        for pub in published_like(dataset, info):
            if sigma in pub.psnr:
                row.update(published_psnr=pub.psnr[sigma], published_source=f"{pub.method}, {pub.source}")
        out.append(row)
    if not out:
        raise ValueError(f"no records of {label!r} in the benchmark JSON")
    command = payload.get("command")
    return out, " ".join(command) if isinstance(command, list) else str(command or "")


def run(args: list[str]) -> int:
    from priorlab.zoo.export import export_checkpoint

    cfg = build_parser().parse_args(args)
    metrics, sources = [], []
    for path in cfg.metrics:
        payload = _read_json(path, "--metrics")
        if isinstance(payload, list):
            bad = [r for r in payload if not isinstance(r, dict) or "dataset" not in r or "psnr" not in r]
            if bad:
                raise ValueError(f"--metrics {path}: every record must be an object with at least 'dataset' and "
                                 f"'psnr' (and usually sigma_255, ssim, bm3d_psnr), got {str(bad[0])[:80]}")
            metrics += payload
        elif isinstance(payload, dict):
            rows, source = metrics_from_benchmark(payload, cfg.model_label)
            metrics += rows
            sources.append(source)
        else:
            raise ValueError(f"--metrics {path}: expected a list of records or a benchmark JSON object")
    source = "; ".join(s for s in sources if s) or None
    training = _read_json(cfg.training, "--training") if cfg.training else {}
    if not isinstance(training, dict):
        raise ValueError(f"--training {cfg.training}: expected a JSON object")
    if cfg.data:
        training = {"data": cfg.data, **training}
    folder = export_checkpoint(cfg.ckpt, cfg.out, name=cfg.name, training=training, metrics=metrics,
                               metrics_source=source, summary=cfg.summary, limitations=cfg.limitations,
                               timm_name=cfg.timm_name, load_spec=cfg.load_spec, overwrite=cfg.overwrite)
    from priorlab.zoo.artifact import WEIGHTS_NAME, sha256_file

    print(f"wrote {folder}/: config.json, {WEIGHTS_NAME} (sha256 {sha256_file(folder / WEIGHTS_NAME)}), README.md")
    print(f"load it with priorlab.zoo.load('local-dir:{folder}'); publish it with "
          f"priorlab hub push {folder} --repo-id ORG/NAME")
    return 0
