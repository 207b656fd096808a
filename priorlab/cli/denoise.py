"""``priorlab denoise``: denoise an image file with a trained denoiser."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from priorlab.cli.io import SSIM_WINDOW, check_output, format_ssim, read_image, ssim_score
from priorlab.files import write_image


def build_parser():
    from jsonargparse import ArgumentParser

    p = ArgumentParser(prog="priorlab denoise", description=(
        "Denoise an image with a trained denoiser. With --sigma, the input is taken as clean, noise of "
        "that level (0-255 scale) is added with --seed, and PSNR/SSIM are printed. Without --sigma the "
        "input is taken as noisy and denoised blindly; give --clean to get PSNR/SSIM. The network is told the "
        "noise level when it is known (--sigma): blind denoisers ignore it, energy models need it."))
    p.add_argument("--ckpt", "--prior", dest="ckpt", type=str, required=True,
                   help="checkpoint written by `priorlab fit` (.ckpt), or a prior's name")
    p.add_argument("--input", type=str, required=True, help="image file (PNG, JPEG, TIFF, BMP)")
    p.add_argument("--output", type=str, default=None, help="denoised image (PNG); default <input>_denoised.png")
    p.add_argument("--sigma", type=float | None, default=None, help="add noise of this std (0-255 scale) first")
    p.add_argument("--clean", type=str | None, default=None, help="clean reference image (blind mode)")
    p.add_argument("--seed", type=int, default=0, help="seed of the added noise")
    p.add_argument("--convert", type=Literal["none", "gray", "rgb"], default="none",
                   help="convert the input to gray (luminance) or RGB to match the model")
    p.add_argument("--figure", type=str | None, default=None,
                   help="also write a PNG figure noisy | denoised | clean with PSNRs")
    p.add_argument("--save_noisy", type=str | None, default=None, help="also write the noisy input (PNG)")
    p.add_argument("--device", type=str, default="cpu", help="cpu, cuda, cuda:1 …")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return p


def run(args: list[str]) -> int:
    import torch
    from torchmetrics.functional.image import peak_signal_noise_ratio as psnr_fn

    from priorlab.core import add_noise, check_images, sigma_from_255
    from priorlab.zoo import load

    cfg = build_parser().parse_args(args)
    inp = Path(cfg.input)
    out = Path(cfg.output) if cfg.output else inp.with_name(f"{inp.stem}_denoised.png")
    extra = [Path(p) for p in (cfg.figure, cfg.save_noisy) if p]
    for path in [out, *extra]:
        check_output(path, [inp] + ([Path(cfg.clean)] if cfg.clean else []), cfg.overwrite)
    if cfg.figure and Path(cfg.figure).suffix.lower() not in ("", ".png"):
        raise ValueError(f"--figure is written as a PNG figure: name it .png, not {Path(cfg.figure).suffix!r}")
    outputs = [p.resolve() for p in [out, *extra]]
    if len(set(outputs)) < len(outputs):
        raise ValueError("--output, --figure and --save_noisy must be different files")
    if cfg.sigma is not None and cfg.clean:
        raise ValueError("--sigma adds noise to a clean --input; --clean is for an already noisy --input")
    if cfg.sigma is not None and not 0 <= cfg.sigma <= 255:
        raise ValueError(f"--sigma is on the 0-255 scale and must be in [0, 255], got {cfg.sigma}")

    net = load(cfg.ckpt, map_location=cfg.device)
    # An energy model's denoiser y − σ²∇U(y, σ²) depends on σ (it has no blind mode) and takes ∇U by autograd.
    energy = net.prior_config.get("kind") == "energy" or callable(getattr(net, "energy", None))
    if energy and cfg.sigma is None:
        raise ValueError(f"{cfg.ckpt} is an energy model, whose denoiser needs the noise level: pass --sigma (the "
                         "std on the 0-255 scale of the noise added to the clean --input); blind denoising of an "
                         "already noisy image (--clean) is only possible with a blind denoiser")
    channels = net.prior_config.get("channels", net.arch_config["init_args"].get("in_chans"))
    x = read_image(inp, convert=cfg.convert)[None].to(cfg.device)
    what = "input image" if cfg.sigma is None else "clean input image"
    check_images(x, channels=channels, name=f"{what} {inp.name}", min_size=getattr(net, "min_size", 1))
    clean = sigma = None
    if cfg.sigma is not None:
        clean, sigma = x, sigma_from_255(cfg.sigma)
        g = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
        y, _ = add_noise(x, sigma, generator=g)
    else:
        y = x
        if cfg.clean:
            clean = read_image(cfg.clean, convert=cfg.convert, what="--clean image")[None].to(cfg.device)
            if clean.shape != y.shape:
                raise ValueError(f"--clean is {tuple(clean.shape[1:])} but --input is {tuple(y.shape[1:])} (C, H, W)")
    t0 = time.perf_counter()
    # The Denoiser contract: the known σ ([0, 1] units) goes to the network; blind networks ignore it.
    with torch.no_grad() if energy else torch.inference_mode():  # autograd (for ∇U) is off in inference mode
        x_hat = net(y, sigma).float()
    elapsed = time.perf_counter() - t0
    x_out = x_hat.clamp(0, 1)
    write_image(x_out[0], out)
    print(f"denoised {inp} ({y.shape[1]}x{y.shape[2]}x{y.shape[3]}) in {elapsed:.2f} s -> {out}")
    psnr_in = psnr_out = None
    if clean is not None:
        psnr_in = psnr_fn(y.clamp(0, 1), clean, data_range=1.0).item()
        psnr_out = psnr_fn(x_out, clean, data_range=1.0).item()
        ssim_in, ssim_out = ssim_score(y.clamp(0, 1), clean), ssim_score(x_out, clean)
        label = f"sigma {cfg.sigma:g}/255, seed {cfg.seed}" if cfg.sigma is not None else "given noisy input"
        ssim_note = "" if ssim_out is not None else f", SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels"
        print(f"{label}: PSNR {psnr_in:.2f} -> {psnr_out:.2f} dB, SSIM {format_ssim(ssim_in)} -> "
              f"{format_ssim(ssim_out)} (noisy input clipped to [0, 1] for its scores{ssim_note})")
    if cfg.save_noisy:
        write_image(y[0].clamp(0, 1), cfg.save_noisy)
        print(f"noisy input -> {cfg.save_noisy}")
    if cfg.figure:
        from priorlab.plotting import DenoisedPanel, denoising_figure, save_figure

        panel = DenoisedPanel(noisy=y[0].clamp(0, 1), denoised=x_out[0], clean=None if clean is None else clean[0],
                              title=inp.stem, psnr_in=psnr_in, psnr_out=psnr_out)
        save_figure(denoising_figure([panel], width=5.0), cfg.figure)
        print(f"figure -> {cfg.figure}")
    return 0
