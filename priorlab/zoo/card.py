"""Model cards: the ``README.md`` of a published prior, rendered from its ``config.json``.

The card has YAML front matter the Hub reads (library, license, tags, datasets and a ``model-index``
with the measured metrics, ecosystem.md §2.5) and sections for use, details, training, results (with
BM3D and published numbers beside ours when the metrics carry them), intended use, limitations,
license and citations. Text comes from ``card_template.md`` (package data).
"""

from __future__ import annotations

import json
from collections import defaultdict
from importlib import resources
from string import Template
from typing import Any

CITATIONS = {
    "bias_free": """@inproceedings{mohan2020biasfree,
  title     = {Robust and Interpretable Blind Image Denoising via Bias-Free Convolutional Neural Networks},
  author    = {Mohan, Sreyas and Kadkhodaie, Zahra and Simoncelli, Eero P. and Fernandez-Granda, Carlos},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2020}
}""",
    "implicit_prior": """@inproceedings{kadkhodaie2021solving,
  title     = {Stochastic Solutions for Linear Inverse Problems using the Prior Implicit in a Denoiser},
  author    = {Kadkhodaie, Zahra and Simoncelli, Eero P.},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2021}
}""",
    "generalization": """@inproceedings{kadkhodaie2024generalization,
  title     = {Generalization in diffusion models arises from geometry-adaptive harmonic representations},
  author    = {Kadkhodaie, Zahra and Guth, Florentin and Simoncelli, Eero P. and Mallat, St{\\'e}phane},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2024}
}""",
    "dual_score": """@inproceedings{guth2025dual,
  title     = {Learning normalized image densities via dual score matching},
  author    = {Guth, Florentin and Kadkhodaie, Zahra and Simoncelli, Eero P.},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2025}
}""",
}

DEFAULT_INTENDED_USE = (
    "A prior for natural images: blind Gaussian denoising in its noise range, sampling with the coarse-to-fine "
    "stochastic ascent (`priorlab sample`), linear inverse problems (`priorlab solve`), and analysis of what a "
    "denoiser does (`priorlab analyze`). Research and teaching; not for medical or forensic decisions.")
_LIMITS_OF_USE = (
    "Additive white Gaussian noise only; real camera noise is not Gaussian. Images must be in [0, 1] with the channel "
    "count above; noise levels outside the training range are extrapolation (bias-free networks degrade gracefully, "
    "but the numbers above do not cover them).")
DEFAULT_LIMITATIONS = ("Trained on the data named above only: expect lower quality on other image statistics (text, "
                       "medical, synthetic). " + _LIMITS_OF_USE)
# When the card names no training data, the default must not point at "the data named above".
UNNAMED_DATA_LIMITATIONS = ("The training data are not recorded with this release: do not assume they resemble your "
                            "images, and expect lower quality on image statistics unlike its training set (text, "
                            "medical, synthetic). " + _LIMITS_OF_USE)
LICENSE_TEXT = {"mit": "MIT: the weights and this card may be used, copied and modified freely, with attribution."}


def _fmt(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _front_matter(config: dict[str, Any], name: str, license_id: str) -> str:
    import yaml

    tags = ["priorlab", "image-prior", "denoiser" if config["kind"] == "denoiser" else "energy-model",
            "image-denoising", "gray" if config["channels"] == 1 else "color"]
    if "bias" in config["init_args"] and not config["init_args"]["bias"]:
        tags.insert(2, "bias-free")
    results = []
    for m in config.get("metrics", []):  # one model-index result per (dataset, σ), its metrics together
        sigma = m.get("sigma_255")
        at = f" at sigma={_fmt(sigma, 0)}/255" if sigma is not None else ""
        metrics = [{"type": k, "value": round(float(m[k]), 4), "name": f"{label}{at}"}
                   for k, label in (("psnr", "PSNR"), ("ssim", "SSIM"), ("bits_per_dim", "bits/dim"))
                   if m.get(k) is not None]
        if metrics:
            results.append({
                "task": {"type": "density-estimation" if m.get("bits_per_dim") is not None else "image-denoising"},
                "dataset": {"type": m.get("dataset", "unknown"), "name": m.get("dataset", "unknown"),
                            "split": m.get("split", "test")},
                "metrics": metrics,
            })
    meta: dict[str, Any] = {"library_name": "priorlab", "license": license_id, "tags": tags,
                            "pipeline_tag": "image-to-image"}
    data = config.get("training", {}).get("dataset_ids")
    if data:
        meta["datasets"] = list(data)
    if results:
        meta["model-index"] = [{"name": name, "results": results}]
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()


def _image_size(config: dict[str, Any]) -> str:
    m = config.get("size_multiple", 1)
    if m == 1:
        return "any"
    if config["kind"] == "denoiser":  # the UNet denoisers reflect-pad other sizes (priorlab.zoo.unet)
        return f"any, at least {m}x{m} (other sizes are reflect-padded to a multiple of {m} inside the network)"
    size = f"height and width multiples of {m}"
    shape = config.get("calibration_shape")
    if config["kind"] == "energy" and shape:
        c, h, w = shape
        size += (f" for the denoiser and the energy; log_prob only at {h}x{w} with {c} channel(s), the size its "
                 "normalization was calibrated for")
    return size


def _details(config: dict[str, Any], params: int | None) -> str:
    low, high = config["sigma_range_255"]
    rows = [
        ("kind", f"{config['kind']} (returns the {config['parametrization']} image)"
         if config["kind"] == "denoiser" else "energy model U(y, t), t = sigma^2"),
        ("architecture", f"`{config['architecture']}` ({config['class_path']})"),
        ("constructor", "`" + ", ".join(f"{k}={v!r}" for k, v in config["init_args"].items()) + "`"),
        ("parameters", f"{params:,}" if params is not None else "–"),
        ("channels", f"{config['channels']} ({'gray, luminance' if config['channels'] == 1 else 'RGB'})"),
        ("image range", f"{config['image_range']}"),
        ("noise range (training)", f"sigma in [{low:g}, {high:g}]/255 ({config['sigma_units']})"),
        ("image size", _image_size(config)),
        ("format", f"config.json format {config['format_version']}, weights model.safetensors, "
                   f"priorlab {config['priorlab_version']}"),
    ]
    return "\n".join(f"| {k} | {v} |" for k, v in rows)


def _names_data(config: dict[str, Any]) -> bool:
    training = config.get("training") or {}
    return bool(training.get("data") or training.get("dataset_ids"))


def _training(config: dict[str, Any]) -> str:
    training = config.get("training") or {}
    if not training:
        return "Not recorded."
    labels = {"data": "Data", "split": "Split", "recipe": "Recipe", "command": "Command",
              "samples_seen": "Samples seen", "batches": "Batches", "length": "Length", "optimizer": "Optimizer",
              "precision": "Precision", "hardware": "Hardware", "duration": "Duration", "date": "Date",
              "source_commit": "Source commit", "ema": "Weights", "sigma_schedule": "Noise schedule",
              "init": "Initialization"}
    lines = [f"- **{labels.get(k, k)}**: {'`' + v + '`' if k in ('command', 'recipe') else v}"
             for k, v in training.items() if k != "dataset_ids"]
    return "\n".join(lines)


def _results(config: dict[str, Any]) -> str:
    metrics = [m for m in config.get("metrics", []) if m.get("psnr") is not None]
    other = [m for m in config.get("metrics", []) if m.get("psnr") is None]
    if not metrics and not other:
        return "No measurements recorded with this release."
    out = []
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in metrics:
        by_dataset[m.get("dataset", "?")].append(m)
    for dataset, rows in by_dataset.items():
        rows.sort(key=lambda m: m.get("sigma_255", 0))
        has_bm3d = any(m.get("bm3d_psnr") is not None for m in rows)
        has_pub = any(m.get("published_psnr") is not None for m in rows)
        head = ["σ₂₅₅", "input PSNR", "PSNR", "SSIM"] + (["BM3D PSNR", "BM3D SSIM"] if has_bm3d else []) + (
            ["published PSNR"] if has_pub else [])
        first = rows[0]
        out.append(f"**{dataset}** ({first.get('split', 'test')} split, {first.get('images', '?')} images, "
                   f"noise seed {first.get('noise_seed', '?')}), mean over images, dB:\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + " --- |" * len(head))
        for m in rows:
            cells = [_fmt(m.get("sigma_255"), 0), _fmt(m.get("psnr_in")), _fmt(m["psnr"]), _fmt(m.get("ssim"), 3)]
            if has_bm3d:
                cells += [_fmt(m.get("bm3d_psnr")), _fmt(m.get("bm3d_ssim"), 3)]
            if has_pub:
                cells.append(_fmt(m.get("published_psnr")))
            out.append("| " + " | ".join(cells) + " |")
        notes = sorted({m["published_source"] for m in rows if m.get("published_source")})
        out += [""] + [f"Published: {n}." for n in notes] + ([""] if notes else [])
    for m in other:
        out.append("- " + ", ".join(f"{k}: {_fmt(v, 4)}" for k, v in m.items()))
    source = config.get("metrics_source")
    if source:
        out.append(f"\nMeasured with `{source}`.")
    return "\n".join(out).strip()


_DENOISER_USAGE = """```python
from priorlab import zoo

net = zoo.load("{load_spec}")          # eval mode; net.prior_config holds this card's facts
x_hat = net(y)                        # y: (B, {channels}, H, W) noisy images in [0, 1] -> denoised estimate
```

```bash
priorlab denoise --prior {load_spec} --input photo.png --sigma 25 --output denoised.png
priorlab sample  --prior {load_spec} --num 16 --size 64 --out samples.png
priorlab solve   --prior {load_spec} --task sr --factor 4 --input photo.png --crop 96 --out sr/
```

Fine-tune it on your own images (a config of the priorlab repository; the network arguments must stay this
prior's):

```bash
priorlab fit --config configs/{finetune}.yaml --model.init_args.init_from {load_spec} \\
    --model.init_args.arch {arch}{arch_args} --model.init_args.sigma_range_255 '{sigma_range}'{schedule} \\
    --data.init_args.train_dirs '[my_images/]'
```"""

_ENERGY_USAGE = """```python
from priorlab import zoo

net = zoo.load("{load_spec}")          # eval mode, with its normalization constant C
log_p = net.log_prob(x)               # x: (B, {channels}, H, W) clean images in [0, 1] -> log p(x) in nats, one pass
x_hat = net(y, sigma)                 # its denoiser y - sigma^2 grad U(y, sigma^2): sigma is required
```

```bash
priorlab logp --prior {load_spec} --data folder:my_images/{resolution} --out logp/   # bits/dim, histogram, JSON
priorlab logp --prior {load_spec} --data folder:my_images/{resolution} --limit 8 --estimator both --out cmp/  # vs ODE
```"""

ENERGY_INTENDED_USE = ("Log-probabilities of images like its training data in one forward pass (bits/dim "
                       "benchmarks, comparing images or datasets by likelihood), and a noise-conditioned denoiser "
                       "for sampling and inverse problems. Research and teaching; not for medical or forensic "
                       "decisions, and not a detector of out-of-distribution data by itself.")


def _arch_args_option(config: dict[str, Any]) -> str:
    """`` --model.init_args.arch_args '{...}'`` for the constructor arguments that differ from the architecture's
    registered defaults (empty when none do), so that a fine-tuning run builds the prior's network."""
    from priorlab.zoo.registry import get_spec

    try:
        defaults = get_spec(config["architecture"]).init_args()
    except (KeyError, TypeError):
        defaults = {}
    extra = {k: v for k, v in config.get("init_args", {}).items() if k != "in_chans" and defaults.get(k, object()) != v}
    return f" --model.init_args.arch_args '{json.dumps(extra)}'" if extra else ""


def render_card(config: dict[str, Any], *, name: str | None = None, load_spec: str | None = None,
                params: int | None = None, summary: str | None = None, intended_use: str | None = None,
                limitations: str | None = None, license_id: str = "mit", timm_name: str | None = None) -> str:
    """The model card (``README.md``) of a prior from its ``config.json``.

    Args:
        config: a checked config (see :mod:`priorlab.zoo.artifact`).
        name: the prior's name (default: ``config["name"]`` or its architecture).
        load_spec: what users pass to ``zoo.load`` (default: the name).
        params: parameter count shown in the details table.
        summary, intended_use, limitations: paragraphs (defaults describe a natural-image prior; the default
            limitations refer to the training data only when ``config["training"]`` names them).
        license_id: SPDX-like license id for the front matter.
        timm_name: ``arch.tag`` when the weights are reachable from timm.
    """
    name = name or config.get("name") or config["architecture"]
    load_spec = load_spec or name
    papers = ["bias_free", "implicit_prior", "generalization"] + (["dual_score"] if config["kind"] == "energy" else [])
    timm_usage = "" if not timm_name else (
        "\nFrom timm (`import priorlab.zoo` registers the architectures and these weights with timm):\n\n"
        "```python\nimport priorlab.zoo  # noqa: F401\nimport timm\n\n"
        f'net = timm.create_model("{timm_name}", pretrained=True)\n```\n')
    template = Template((resources.files("priorlab.zoo") / "card_template.md").read_text())
    shape = config.get("calibration_shape")  # an energy model's log p is calibrated for one image size
    resolution = f" --resolution {shape[-1]}" if shape and shape[-1] == shape[-2] else ""
    bias_free = not config["init_args"].get("bias", True)
    article = "A" if bias_free or config["kind"][0] not in "aeiou" else "An"
    schedule = (config.get("training") or {}).get("sigma_schedule")
    usage = (_ENERGY_USAGE if config["kind"] == "energy" else _DENOISER_USAGE).format(
        load_spec=load_spec, channels=config["channels"], resolution=resolution, arch=config["architecture"],
        finetune="finetune_gray" if config["channels"] == 1 else "finetune_color",
        arch_args=_arch_args_option(config), sigma_range=json.dumps(list(config.get("sigma_range_255", [0, 100]))),
        schedule=f" --model.init_args.sigma_schedule {schedule}" if schedule else "")
    return template.substitute(
        front_matter=_front_matter(config, name, license_id),
        title=name,
        summary=summary or (f"{article} {'bias-free ' if bias_free else ''}"
                            f"{config['kind']} prior for {'gray' if config['channels'] == 1 else 'color'} natural "
                            f"images, trained with [priorlab](https://github.com/priorlab/priorlab)."),
        usage=usage, timm_usage=timm_usage,
        details=_details(config, params), training=_training(config), results=_results(config),
        intended_use=intended_use or (ENERGY_INTENDED_USE if config["kind"] == "energy" else DEFAULT_INTENDED_USE),
        limitations=limitations or (DEFAULT_LIMITATIONS if _names_data(config) else UNNAMED_DATA_LIMITATIONS),
        license_text=LICENSE_TEXT.get(license_id, license_id),
        citations="\n\n".join(CITATIONS[p] for p in papers),
    )
