"""``priorlab analyze``: look inside a trained denoiser (algorithms.md §2.1, §3).

Subcommands: ``jacobian`` (symmetry, spectrum, effective dimensionality and net bias at one noisy
crop), ``filters`` (rows of the Jacobian at chosen pixels, against σ), ``basis`` (leading eigenvectors
of its symmetric part), ``dimensionality`` (effective dimensionality against σ over patches) and
``noise-generalization`` (PSNR against σ for one or more priors). Each writes PNG figures and a JSON
of the numbers into ``--out``; existing files are kept unless ``--overwrite``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from priorlab.cli.io import check_output, progress_interval, read_image

SUBCOMMANDS = {
    "jacobian": "Jacobian of the denoiser at a noisy crop: symmetry, spectrum, effective dimensionality, net bias",
    "filters": "adaptive filters (rows of the Jacobian) at chosen pixels of a crop, against sigma",
    "basis": "adaptive basis: leading eigenvectors of the Jacobian's symmetric part at a noisy crop",
    "dimensionality": "effective dimensionality against sigma over random patches of the input images",
    "noise-generalization": "PSNR against sigma for one or more priors on the same noisy images",
}
OUTPUTS = {
    "jacobian": ["jacobian.json", "jacobian.png"],
    "filters": ["filters.json", "filters.png", "filters_radius.png"],
    "basis": ["basis.json", "basis.png"],
    "dimensionality": ["dimensionality.json", "dimensionality.png"],
    "noise-generalization": ["noise_generalization.json", "noise_generalization.png"],
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _subparser(name: str):
    from jsonargparse import ArgumentParser

    p = ArgumentParser(prog=f"priorlab analyze {name}", description=SUBCOMMANDS[name])
    p.add_argument("--prior", "--ckpt", dest="prior", action="append", type=str, required=True,
                   help="checkpoint written by `priorlab fit` (.ckpt); repeat for several priors "
                        "(noise-generalization)")
    p.add_argument("--input", action="append", type=str, required=True,
                   help="image file or folder of images; repeat for several")
    p.add_argument("--out", type=str, required=True, help="output folder for the PNG figures and the JSON")
    p.add_argument("--convert", type=Literal["none", "gray", "rgb"], default="none",
                   help="convert the input to gray (luminance) or RGB to match the prior")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (and of probes and patch positions)")
    p.add_argument("--device", type=str, default="cpu", help="cpu, cuda, cuda:1 …")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    if name in ("jacobian", "filters", "basis"):
        p.add_argument("--crop", type=int, nargs=3, default=None, metavar=("Y", "X", "SIZE"),
                       help="analyse the SIZE×SIZE crop with top-left corner (Y, X); default a centred 40×40")
    if name in ("jacobian", "basis"):
        p.add_argument("--sigma", type=float, default=25.0, help="noise std on the 0-255 scale")
    if name in ("jacobian", "basis", "dimensionality"):
        p.add_argument("--mode", type=Literal["auto", "exact", "matrix-free"], default="auto",
                       help="dense Jacobian (exact), Hutchinson/subspace iteration (matrix-free), or exact when "
                            "it fits under --max_exact_mb")
        p.add_argument("--max_exact_mb", type=float, default=256.0, help="largest dense Jacobian (N² × 4 bytes), MiB")
        p.add_argument("--probes", type=int, default=64, help="Rademacher probes per Hutchinson estimate")
    if name in ("jacobian", "basis"):
        p.add_argument("--num_eigen", type=int, default=23, help="leading eigenvectors to compute and plot")
        p.add_argument("--iters", type=int, default=20, help="subspace iterations (matrix-free)")
    if name == "filters":
        p.add_argument("--sigmas", type=float, nargs="+", default=[10.0, 30.0, 60.0, 100.0],
                       help="noise stds on the 0-255 scale")
        p.add_argument("--pixels", type=str, nargs="+", default=None, metavar="Y,X",
                       help="pixels inside the crop as Y,X; default the centre and four points around it")
    if name == "dimensionality":
        p.add_argument("--sigmas", type=float, nargs="+", default=[10.0 * i for i in range(1, 11)],
                       help="noise stds on the 0-255 scale")
        p.add_argument("--patches", type=int, default=10, help="number of patches, taken from the images in turn")
        p.add_argument("--patch_size", type=int, default=40, help="patch height and width in pixels")
    if name == "noise-generalization":
        p.add_argument("--sigmas", type=float, nargs="+", default=[5.0] + [10.0 * i for i in range(1, 11)],
                       help="noise stds on the 0-255 scale")
        p.add_argument("--max_images", type=int, default=5, help="use at most this many images")
        p.add_argument("--names", type=str, nargs="+", default=None, help="legend names of the priors, in order")
        p.add_argument("--published", type=str | None, default=None, metavar="DATASET",
                       help="also draw the published curves (algorithms.md §12.1) of networks trained like each "
                            "prior (same σ range, bias-free or biased) on this test set, e.g. bsd68 — only "
                            "meaningful when --input is that set")
    return p


def build_parser():
    from jsonargparse import ArgumentParser

    p = ArgumentParser(prog="priorlab analyze", description=__doc__.split("\n\n")[1].replace("\n", " "))
    sub = p.add_subcommands(required=True, dest="subcommand")
    for name, text in SUBCOMMANDS.items():
        sub.add_subcommand(name, _subparser(name), help=text)
    return p


def _write_json(data: dict, path: Path) -> None:
    from priorlab.files import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def _image_files(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"input image not found: {path}")
    return files


def _load_priors(cfg, device):
    from priorlab.zoo import load

    nets = []
    for spec in cfg.prior:
        net = load(spec, map_location=device)
        channels = net.prior_config.get("channels", net.arch_config["init_args"].get("in_chans"))
        nets.append((spec, net, channels))
    return nets


def _read(path: Path, cfg, channels: int, min_size: int, device):
    from priorlab.core import check_images

    x = read_image(path, convert=cfg.convert)[None].to(device)
    check_images(x, channels=channels, name=f"image {path.name}", min_size=min_size, check_range=True)
    return x[0]


def _crop(x, crop: list[int] | None, name: str):
    _, h, w = x.shape
    if crop is None:
        size = min(40, h, w)
        crop = [(h - size) // 2, (w - size) // 2, size]
    y0, x0, size = crop
    if size < 1 or y0 < 0 or x0 < 0 or y0 + size > h or x0 + size > w:
        raise ValueError(f"--crop {y0} {x0} {size} lies outside {name} ({h}x{w}): need 0 <= Y, 0 <= X, "
                         f"Y + SIZE <= {h}, X + SIZE <= {w}")
    return x[:, y0:y0 + size, x0:x0 + size], [y0, x0, size]


def _bar(total: int, desc: str):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, leave=False, mininterval=progress_interval())

    def callback(done: int, total_: int) -> None:
        bar.total = total_
        bar.update(done - bar.n)  # redraws at most every mininterval

    return bar, callback


def _label(spec: str, net) -> str:
    rng = net.prior_config.get("sigma_range_255")
    arch = net.arch_config.get("architecture", "prior")
    return f"{arch}, σ∈[{rng[0]:g},{rng[1]:g}]" if rng else f"{arch} ({Path(spec).name})"


def run(args: list[str]) -> int:
    import torch

    cfg_all = build_parser().parse_args(args)
    name = cfg_all.subcommand
    cfg = cfg_all[name]
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    paths = [out / f for f in OUTPUTS[name]]
    files = _image_files(cfg.input)
    for path in paths:
        if path.suffix == ".json":
            if path.exists() and not cfg.overwrite:
                raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
        else:
            check_output(path, files, cfg.overwrite)
    for s in [getattr(cfg, "sigma", None), *(getattr(cfg, "sigmas", None) or [])]:
        if s is not None and not 0 < s <= 255:
            raise ValueError(f"noise levels are on the 0-255 scale and must be in (0, 255], got {s:g}")
    for option, least in (("num_eigen", 1), ("iters", 1), ("probes", 2), ("max_images", 1), ("patches", 1),
                          ("patch_size", 1)):
        value = getattr(cfg, option, None)
        if value is not None and value < least:
            raise ValueError(f"--{option} must be >= {least}, got {value}"
                             + (" (a standard error needs two probes)" if option == "probes" else ""))
    if getattr(cfg, "max_exact_mb", None) is not None and not cfg.max_exact_mb > 0:
        raise ValueError(f"--max_exact_mb must be > 0, got {cfg.max_exact_mb:g}")
    if name != "noise-generalization" and len(cfg.prior) != 1:
        raise ValueError(f"`analyze {name}` takes one --prior; compare priors with `analyze noise-generalization`")
    priors = _load_priors(cfg, cfg.device)
    g = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    meta = {"command": f"priorlab analyze {name}", "priors": [p for p, _, _ in priors],
            "architectures": [n.arch_config.get("architecture") for _, n, _ in priors],
            "inputs": [str(f) for f in files], "convert": cfg.convert, "seed": cfg.seed, "device": cfg.device}
    return RUNNERS[name](cfg, priors, files, g, meta, paths)


def _one_crop(cfg, priors, files):
    if len(files) != 1:
        raise ValueError(f"give one --input image (got {len(files)})")
    spec, net, channels = priors[0]
    x = _read(files[0], cfg, channels, getattr(net, "min_size", 1), cfg.device)
    crop, box = _crop(x, cfg.crop, files[0].name)
    return spec, net, crop, box


def _noisy_crop(cfg, priors, files, g):
    """The one prior, its crop and the crop with noise of level ``--sigma`` added (seeded by ``g``)."""
    from priorlab.core import add_noise, sigma_from_255

    spec, net, crop, box = _one_crop(cfg, priors, files)
    sigma = sigma_from_255(cfg.sigma)
    return spec, net, crop, box, sigma, add_noise(crop[None], sigma, generator=g)[0][0]


def _jacobian(cfg, priors, files, g, meta, paths) -> int:
    from priorlab.analysis import analyze_jacobian
    from priorlab.cli.analyze_figures import jacobian_figure
    from priorlab.plotting import save_figure

    spec, net, crop, box, sigma, y = _noisy_crop(cfg, priors, files, g)
    bar, cb = _bar(crop.numel(), "Jacobian rows")
    with bar:
        r = analyze_jacobian(net, y, sigma, mode=cfg.mode, num_eigen=cfg.num_eigen, probes=cfg.probes,
                             iters=cfg.iters, generator=g, max_bytes=int(cfg.max_exact_mb * 2**20), callback=cb)
    kind = "exact" if r.exact else f"matrix-free, {cfg.probes} probes"
    data = {**meta, "crop_yx_size": box, "sigma_255": cfg.sigma, "mode": "exact" if r.exact else "matrix-free",
            "probes": 0 if r.exact else cfg.probes, "N": crop.numel(), "trace": r.trace,
            "trace_stderr": r.trace_stderr, "frobenius_sq": r.frobenius_sq,
            "frobenius_sq_stderr": r.frobenius_sq_stderr, "asymmetry_rel_frobenius": r.asymmetry,
            "net_bias_norm": r.net_bias_norm, "denoised_norm": r.denoised_norm,
            "net_bias_relative": r.net_bias_norm / max(r.denoised_norm, 1e-300),
            "eigenvalues_sym": r.eigenvalues.tolist(),
            "singular_values": None if r.singular_values is None else r.singular_values.tolist()}
    _write_json(data, paths[0])
    title = (f"{Path(spec).name} at {files[0].name} crop {box}, σ={cfg.sigma:g}/255 ({kind}): tr A={r.trace:.1f}, "
             f"‖A‖_F²={r.frobenius_sq:.1f}, ‖A−Aᵀ‖/‖A‖={r.asymmetry:.3f}, ‖b‖/‖x̂‖={data['net_bias_relative']:.1e}")
    save_figure(jacobian_figure(y, r.denoised, r.eigenvalues, r.singular_values, title), paths[1])
    print(f"N={crop.numel()} ({kind}): trace {r.trace:.2f}, ||A||_F^2 {r.frobenius_sq:.2f}, "
          f"asymmetry {r.asymmetry:.4f}, net bias {r.net_bias_norm:.3g} (x_hat norm {r.denoised_norm:.3g})")
    print("\n".join(f"-> {p}" for p in paths))
    return 0


def _parse_pixels(pixels, size: int):
    if pixels is None:
        c, d = size // 2, max(1, size // 4)
        return [(c, c), (c - d, c - d), (c - d, c + d), (c + d, c - d), (c + d, c + d)]
    out = []
    for item in pixels:
        try:
            r, c = (int(v) for v in str(item).split(","))
        except ValueError as err:
            raise ValueError(f"--pixels takes Y,X pairs such as 20,20; got {item!r}") from err
        if not (0 <= r < size and 0 <= c < size):
            raise ValueError(f"pixel {r},{c} lies outside the {size}x{size} crop")
        out.append((r, c))
    return out


def _filters(cfg, priors, files, g, meta, paths) -> int:
    from priorlab.analysis import adaptive_filters
    from priorlab.cli.analyze_figures import SIGN_LEGEND, filters_figure, radius_figure
    from priorlab.core import sigma_from_255
    from priorlab.plotting import save_figure

    spec, net, crop, box = _one_crop(cfg, priors, files)
    pixels = _parse_pixels(cfg.pixels, box[2])
    bar, cb = _bar(len(cfg.sigmas), "noise levels")
    with bar:
        r = adaptive_filters(net, crop, pixels, [sigma_from_255(s) for s in cfg.sigmas], generator=g, callback=cb)
    data = {**meta, "crop_yx_size": box, "sigmas_255": cfg.sigmas, "pixels_yx_in_crop": pixels,
            "filter_sums": r.sums.tolist(), "effective_radius_px": r.radii.tolist(),
            "effective_radius_definition": "sqrt(sum_j w_j^2 d_j^2 / sum_j w_j^2), d_j distance to the pixel"}
    _write_json(data, paths[0])
    title = (f"{Path(spec).name}: rows of A_y at {files[0].name} crop {box} "
             f"({SIGN_LEGEND[crop.shape[-3]]}; colours saturate at 20% of the peak)")
    save_figure(filters_figure(crop, r, cfg.sigmas, title), paths[1])
    save_figure(radius_figure(r, cfg.sigmas, f"{Path(spec).name}: filter radius vs σ"), paths[2])
    for s, sig in enumerate(cfg.sigmas):
        print(f"sigma {sig:g}: mean effective radius {r.radii[s].mean():.2f} px, mean row sum {r.sums[s].mean():.3f}")
    print("\n".join(f"-> {p}" for p in paths))
    return 0


def _basis(cfg, priors, files, g, meta, paths) -> int:
    from priorlab.analysis import adaptive_basis
    from priorlab.cli.analyze_figures import SIGN_LEGEND, basis_figure
    from priorlab.plotting import save_figure

    spec, net, crop, box, sigma, y = _noisy_crop(cfg, priors, files, g)
    bar, cb = _bar(crop.numel(), "Jacobian rows")
    with bar:
        r = adaptive_basis(net, y, sigma, k=cfg.num_eigen, mode=cfg.mode, iters=cfg.iters, generator=g,
                           max_bytes=int(cfg.max_exact_mb * 2**20), callback=cb)
    data = {**meta, "crop_yx_size": box, "sigma_255": cfg.sigma, "mode": "exact" if r.exact else "matrix-free",
            "eigenvalues_sym": r.eigenvalues.tolist()}
    _write_json(data, paths[0])
    title = (f"{Path(spec).name}: leading eigenvectors of ½(A+Aᵀ), {files[0].name} crop {box}, σ={cfg.sigma:g}/255 "
             f"({SIGN_LEGEND[y.shape[-3]]})")
    save_figure(basis_figure(y, r.eigenvalues, r.eigenvectors, title), paths[1])
    print(f"leading eigenvalues: {', '.join(f'{v:.3f}' for v in r.eigenvalues[:8].tolist())}")
    print("\n".join(f"-> {p}" for p in paths))
    return 0


def _dimensionality(cfg, priors, files, g, meta, paths) -> int:
    import torch

    from priorlab.analysis import effective_dimensionality
    from priorlab.cli.analyze_figures import PUBLISHED_DIMS, dimensionality_figure
    from priorlab.core import sigma_from_255
    from priorlab.plotting import save_figure

    spec, net, channels = priors[0]
    size, patches, where = cfg.patch_size, [], []
    for p in range(cfg.patches):
        path = files[p % len(files)]
        x = _read(path, cfg, channels, getattr(net, "min_size", 1), cfg.device)
        if min(x.shape[-2:]) < size:
            raise ValueError(f"image {path.name} is {x.shape[-2]}x{x.shape[-1]} pixels, smaller than "
                             f"--patch_size {size}")
        y0 = int(torch.randint(0, x.shape[1] - size + 1, (1,), generator=g, device=cfg.device))
        x0 = int(torch.randint(0, x.shape[2] - size + 1, (1,), generator=g, device=cfg.device))
        patches.append(x[:, y0:y0 + size, x0:x0 + size])
        where.append([str(path), y0, x0, size])
    numel = patches[0].numel()
    exact = cfg.mode == "exact" or (cfg.mode == "auto" and 4 * numel**2 <= cfg.max_exact_mb * 2**20)
    bar, cb = _bar(len(cfg.sigmas) * cfg.patches, "patches x sigmas")
    with bar:
        r = effective_dimensionality(net, torch.stack(patches), [sigma_from_255(s) for s in cfg.sigmas],
                                     exact=exact, probes=cfg.probes, generator=g,
                                     max_bytes=int(cfg.max_exact_mb * 2**20), callback=cb)
    stats = {k: {"mean": v.mean(1).tolist(), "min": v.min(1).values.tolist(), "max": v.max(1).values.tolist(),
                 "per_patch": v.tolist()} for k, v in
             (("frobenius_sq", r.frobenius_sq), ("trace", r.trace), ("mse_over_sigma2", r.mse))}
    data = {**meta, "sigmas_255": cfg.sigmas, "patches_path_y_x_size": where, "N": numel,
            "mode": "exact" if exact else "matrix-free", "probes": r.probes,
            "definitions": {"frobenius_sq": "||A_y||_F^2 (bias-free paper, published table)",
                            "trace": "tr A_y (ICLR 2024)", "mse_over_sigma2": "||x - x_hat(y)||^2 / sigma^2, one draw"},
            **stats, "published_bf_dncnn_frobenius_sq_mean": PUBLISHED_DIMS}
    _write_json(data, paths[0])
    kind = "exact" if exact else f"Hutchinson, {cfg.probes} probes"
    title = (f"{Path(spec).name}: effective dimensionality, {cfg.patches} patches {size}×{size} ({kind}); "
             "band = range over patches")
    fig = dimensionality_figure(cfg.sigmas, {"‖A_y‖_F²": r.frobenius_sq, "tr A_y": r.trace}, title)
    save_figure(fig, paths[1])
    print("sigma_255  ||A||_F^2 mean [min-max]   tr A mean   mean x sigma_255")
    for s, sig in enumerate(cfg.sigmas):
        f = r.frobenius_sq[s]
        print(f"{sig:8g}  {f.mean():8.1f} [{f.min():.1f}-{f.max():.1f}]  {r.trace[s].mean():9.1f}  "
              f"{f.mean() * sig:10.0f}")
    print("\n".join(f"-> {p}" for p in paths))
    return 0


def _noise_generalization(cfg, priors, files, g, meta, paths) -> int:
    from priorlab.analysis import psnr_vs_sigma
    from priorlab.cli.analyze_figures import generalization_figure
    from priorlab.core import sigma_from_255
    from priorlab.plotting import save_figure

    channels = {c for _, _, c in priors}
    if len(channels) != 1:
        raise ValueError(f"the priors expect different channel counts {sorted(channels)}; compare like with like")
    if cfg.names is not None and len(cfg.names) != len(priors):
        raise ValueError(f"--names gives {len(cfg.names)} names for {len(priors)} priors")
    names = cfg.names or [_label(spec, net) for spec, net, _ in priors]
    if len(set(names)) != len(names):
        names = [f"{n} #{i + 1}" for i, n in enumerate(names)]
    published = _published_curves(cfg.published, names, priors) if cfg.published else {}
    min_size = max(getattr(net, "min_size", 1) for _, net, _ in priors)
    files = files[: cfg.max_images]
    images = [_read(f, cfg, priors[0][2], min_size, cfg.device) for f in files]
    bar, cb = _bar(len(cfg.sigmas) * len(images), "sigmas x images")
    with bar:
        r = psnr_vs_sigma({n: net for n, (_, net, _) in zip(names, priors)}, images,
                          [sigma_from_255(s) for s in cfg.sigmas], generator=g, callback=cb)
    mean = r.mean_psnr()
    data = {**meta, "inputs": [str(f) for f in files], "sigmas_255": cfg.sigmas, "names": names,
            "training_sigma_range_255": [net.prior_config.get("sigma_range_255") for _, net, _ in priors],
            "psnr_mean": {n: mean[i].tolist() for i, n in enumerate(names)},
            "psnr_per_image": {n: r.psnr[i].tolist() for i, n in enumerate(names)},
            "psnr_in_mean": r.psnr_in.mean(1).tolist(),
            "clipping": "outputs and noisy inputs clipped to [0, 1] before PSNR; noise not clipped at the input"}
    ranges = {n: net.prior_config.get("sigma_range_255") for n, (_, net, _) in zip(names, priors)}
    if published:
        data["published"] = {n: {"method": p.method, "dataset": p.dataset, "source": p.source,
                                 "psnr": {str(k): v for k, v in p.psnr.items()}} for n, p in published.items()}
    _write_json(data, paths[0])
    title = f"PSNR vs σ on {len(images)} image(s), mean over images (shaded: training range)"
    save_figure(generalization_figure(cfg.sigmas, dict(zip(names, mean)), r.psnr_in.mean(1), ranges, title,
                                      published), paths[1])
    print("sigma_255 " + " ".join(f"{n[:28]:>28}" for n in names) + "   input")
    for s, sig in enumerate(cfg.sigmas):
        print(f"{sig:9g} " + " ".join(f"{mean[i, s]:28.2f}" for i in range(len(names)))
              + f"   {r.psnr_in[s].mean():.2f}")
    print("\n".join(f"-> {p}" for p in paths))
    return 0


def _published_curves(dataset: str, names: list[str], priors) -> dict:
    """The published curve of a network trained like each prior (same σ range and bias), where one exists."""
    from priorlab.benchmarks.denoising import PUBLISHED_ALL, published_like

    known = sorted({p.dataset for p in PUBLISHED_ALL})
    if dataset not in known:
        raise ValueError(f"--published {dataset!r}: published curves exist for {', '.join(known)}")
    out = {}
    for name, (_, net, _) in zip(names, priors):
        cfg = getattr(net, "prior_config", {}) or {}
        found = published_like(dataset, cfg)
        if found:
            out[name] = found[0]
        else:
            print(f"note: no published {dataset} curve for a network trained like {name} "
                  f"(σ₂₅₅ ∈ {cfg.get('sigma_range_255')}); it is drawn alone")
    return out


RUNNERS = {"jacobian": _jacobian, "filters": _filters, "basis": _basis, "dimensionality": _dimensionality,
           "noise-generalization": _noise_generalization}
