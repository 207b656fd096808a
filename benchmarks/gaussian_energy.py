"""Dual score matching on a Gaussian field: learned NLL vs the exact entropy, learned denoiser vs Wiener.

Trains a small energy UNet with ``DualScoreModule`` through Lightning's Trainer on
``GaussianFieldDataModule`` (CPU, a few minutes), then — as a user would — calibrates the normalization
constant on held-out samples at t_max (1e3 by default) and evaluates ``log_prob`` on test samples (algorithms.md §7.4).
The data density is closed-form, so the exact answers are known: the cross-entropy E[−log p_θ(x)]
(bits/dim, continuous: no 8-bit offset) against the entropy of the field, and the denoiser's MSE against
the Wiener (MMSE) optimum. Also times one energy training step (double backward) against one plain
denoiser step of the same UNet (the network f_θ(y, t) trained directly as a denoiser, DSM only).

    OMP_NUM_THREADS=2 python benchmarks/gaussian_energy.py --steps 1500 --out docs/figures/dsm_gaussian_energy.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from priorlab.core.energy import GaussianEnergy
from priorlab.core.likelihood import bits_per_dim, mean_and_stderr
from priorlab.core.losses import denoising_loss, dsm_loss, tsm_loss
from priorlab.datamodules import GaussianFieldDataModule
from priorlab.files import refuse_to_replace, write_text_atomic
from priorlab.lightning_modules import EMA, DualScoreModule
from priorlab.zoo import create_model, load
from priorlab.zoo.artifact import build_config, save_folder
from priorlab.zoo.energy_unet import count_parameters


def exact_entropy_bits_per_dim(field) -> float:
    """Differential entropy of the field, ½·ln det(2πeΣ)/d, in bits/dim (continuous)."""
    log_det = field.channels * torch.log(field.spectrum()).sum().item()
    return 0.5 * (log_det + field.num_pixels * math.log(2 * math.pi * math.e)) / (field.num_pixels * math.log(2))


def step_times(net, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Seconds per optimizer step: dual score matching (double backward) vs the plain denoiser step of f_θ."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    t = torch.full((x.shape[0],), 0.01)
    y = x + 0.1 * torch.randn_like(x)

    def energy_step():
        _, gy, gt = net.scores(y, t, create_graph=True)
        loss = (dsm_loss(y - t.view(-1, 1, 1, 1) * gy, x, t) + tsm_loss(gt, y, x, t)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def denoiser_step():
        loss = denoising_loss(y - t.view(-1, 1, 1, 1) * net.unet(y, t), x).mean()  # D = y − t·f_θ (§7.2 baseline)
        opt.zero_grad()
        loss.backward()
        opt.step()

    out = {}
    for name, fn in (("energy_step_s", energy_step), ("denoiser_step_s", denoiser_step)):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = sorted(times)[len(times) // 2]  # median
    out["ratio"] = out["energy_step_s"] / out["denoiser_step_s"]
    return out


def energy_error_by_noise_level(net, field, x: torch.Tensor, generator: torch.Generator,
                                log10_ts=tuple(k / 2 for k in range(-18, 7))) -> dict:
    """Where the NLL error comes from, noise level by noise level, against the exact energy.

    For each variance t (every half decade), noisy images y = x + √t·z give

    * the paired mean of (U(y, t) + C) − (−log p(y, t)) in bits/dim: 0 for a perfect, perfectly normalized
      model; at the smallest t it is the benchmark's NLL error;
    * the score error E‖∇_yU − ∇_yU_exact‖²/d, whose integral ``kl_from_scores`` = ½∫E‖δs‖² dt/(d ln 2)
      is KL(p‖q) in bits/dim when the model's densities are normalized at every t (de Bruijn's identity:
      dKL/dt = −½ Fisher divergence, and KL → 0 at large t). It is what the imperfect denoiser alone
      costs: the NLL error minus it is the part due to the normalization (time score);
    * the error of the time score t·∂_tU/d (what ℓ_TSM fits): its mean and RMS, beside the exact RMS.
    """
    d = field.num_pixels
    exact = GaussianEnergy(field)
    rows = []
    for p in log10_ts:
        t = 10.0**p
        y = x + math.sqrt(t) * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        u, gy, dudt = net.scores(y, t)
        ue, gye, dudte = exact.scores(y.double(), t)
        err = (u.double() + net.log_norm_const.item() - ue) / (d * math.log(2))
        mean, se = mean_and_stderr(err)
        ts_err = t * (dudt.double() - dudte) / d
        rows.append({"t": t, "model_minus_exact": mean, "stderr": se,
                     "score_error_sq_per_dim": float((gy.double() - gye).pow(2).flatten(1).sum(1).mean() / d),
                     "time_score_bias": float(ts_err.mean()), "time_score_rmse": float(ts_err.pow(2).mean().sqrt()),
                     "time_score_rms_exact": float((t * dudte / d).pow(2).mean().sqrt())})
    # ½∫ E‖δs‖²/d dt = ½∫ t·E‖δs‖²/d d(ln t), trapezoids on the half-decade grid; below the grid it is ≈ 0.
    f = [r["t"] * r["score_error_sq_per_dim"] for r in rows]
    step = math.log(10) / 2
    kl = 0.5 * sum((a + b) / 2 * step for a, b in zip(f, f[1:])) / math.log(2)
    return {"levels": rows, "kl_from_scores_bits_per_dim": kl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=2.0)
    parser.add_argument("--variance", type=float, default=0.01)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--tsm-weight", type=float, default=1.0, help="λ, weight of the time-score term")
    parser.add_argument("--ema-decay", type=float, default=0.995)
    parser.add_argument("--log10-t-range", type=float, nargs=2, default=(-9.0, 3.0))
    parser.add_argument("--t-max", type=float, default=1e3,
                        help="noise variance of the Gaussian limit that fixes C (inside --log10-t-range)")
    parser.add_argument("--calib-images", type=int, default=4096)
    parser.add_argument("--test-images", type=int, default=2048)
    parser.add_argument("--timing-repeats", type=int, default=10)
    parser.add_argument("--timing-arch", default="energy_unet_small",
                        help="also time this registered energy architecture (at --timing-shape)")
    parser.add_argument("--timing-shape", type=int, nargs=4, default=(32, 1, 28, 28), metavar=("B", "C", "H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accelerator", default="cpu", help="Lightning accelerator for training (evaluation: CPU)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--save", type=Path, default=None,
                        help="also save the trained network (a prior folder: config.json + model.safetensors)")
    parser.add_argument("--load", type=Path, default=None,
                        help="skip training: evaluate this saved network (a --save folder) instead")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args()
    refuse_to_replace(args.out, overwrite=args.overwrite)

    pl.seed_everything(args.seed, verbose=False)
    data = GaussianFieldDataModule(size=args.size, alpha=args.alpha, variance=args.variance, mean=0.5,
                                   train_samples=args.steps * args.batch_size, batch_size=args.batch_size,
                                   seed=args.seed)
    field = data.field
    module = DualScoreModule(arch="energy_unet_small", arch_args={"width": args.width, "num_layers": args.num_layers},
                             in_chans=1, log10_t_range=tuple(args.log10_t_range), nll_levels=None, lr=args.lr,
                             tsm_weight=args.tsm_weight, t_max=args.t_max,
                             lr_halving_steps=max(1, args.steps // 4))
    trainer = pl.Trainer(accelerator=args.accelerator, devices=1, max_steps=args.steps, limit_val_batches=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, inference_mode=False,
                         callbacks=[EMA(decay=args.ema_decay)])
    start = time.perf_counter()
    if args.load is None:
        trainer.fit(module, datamodule=data)
        net = module.net.cpu().eval()
    else:
        net = load(f"local-dir:{args.load}").cpu().eval()
    train_s = time.perf_counter() - start

    # The user path: calibrate C on held-out samples, then one forward pass per test image.
    g = torch.Generator().manual_seed(args.seed + 1)
    calib = net.calibrate(field.sample(args.calib_images, g), t_max=args.t_max, generator=g)
    x = field.sample(args.test_images, g)
    start = time.perf_counter()
    log_p = net.log_prob(x)
    logp_s = time.perf_counter() - start
    d = field.num_pixels
    model_bpd, model_se = mean_and_stderr(bits_per_dim(-log_p, d, levels=None))
    exact_bpd, exact_se = mean_and_stderr(bits_per_dim(-field.log_prob(x.double()), d, levels=None))
    paired, paired_se = mean_and_stderr(bits_per_dim(-log_p, d, levels=None)
                                        - bits_per_dim(-field.log_prob(x.double()), d, levels=None))
    lo, hi = args.log10_t_range
    by_level = energy_error_by_noise_level(net, field, x[:512], g,
                                           log10_ts=tuple(k / 2 for k in range(int(2 * lo), int(2 * hi) + 1)))
    levels = by_level["levels"]
    denoising = []
    for sigma in (0.02, 0.05, 0.1, 0.2, 0.5):
        y = x[:512] + sigma * torch.randn(x[:512].shape, generator=g)
        mse = float((net(y, sigma) - x[:512]).pow(2).mean())
        denoising.append({"sigma": sigma, "mse": mse, "wiener_mse": field.mmse(sigma),
                          "mse_ratio": mse / field.mmse(sigma)})
    # Timed steps change the weights they time: time a copy, keep (and save) the evaluated network.
    timing = {"trained_model": step_times(copy.deepcopy(net).train(), field.sample(args.batch_size, g),
                                          args.timing_repeats)}
    if args.timing_arch:
        b, c, h, w = args.timing_shape
        other = create_model(args.timing_arch, in_chans=c)
        timing[f"{args.timing_arch}_{b}x{c}x{h}x{w}"] = step_times(other, torch.rand(b, c, h, w, generator=g),
                                                                  args.timing_repeats)

    result = {
        "command": "python benchmarks/gaussian_energy.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
            for k, v in vars(args).items() if k != "out" and v is not None),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, no GPU",
        "torch": torch.__version__,
        "field": repr(field),
        "model": {"arch": "energy_unet_small", "width": args.width, "num_layers": args.num_layers,
                  "parameters": count_parameters(net)},
        "train_steps": args.steps if args.load is None else None,
        "train_seconds": round(train_s, 1) if args.load is None else None,
        "loaded_from": str(args.load) if args.load is not None else None,
        "calibration": {"log_norm_const": calib.log_norm_const, "stderr_nats": calib.stderr,
                        "stderr_bits_per_dim": calib.stderr / (d * math.log(2)), "t_max": calib.t_max,
                        "images": calib.num_images},
        "nll_bits_per_dim": {"model": model_bpd, "model_stderr": model_se, "exact_cross_entropy": exact_bpd,
                             "exact_stderr": exact_se, "exact_entropy": exact_entropy_bits_per_dim(field),
                             "model_minus_exact": paired, "model_minus_exact_stderr": paired_se,
                             "dequantization": "none (continuous density)"},
        "energy_error_by_noise_level": levels,
        "kl_from_scores_bits_per_dim": by_level["kl_from_scores_bits_per_dim"],
        "log_prob_images_per_second": args.test_images / logp_s,
        "denoising": denoising,
        "step_time_cpu": timing,
    }
    if args.save:
        config = build_config(net, kind="energy", sigma_range_255=(255 * 10 ** (lo / 2), 255 * 10 ** (hi / 2)),
                              training={"command": result["command"], "data": repr(field)})
        save_folder(net, config, args.save)
    for row in levels:
        print(f"t = {row['t']:8.1e}: model - exact = {row['model_minus_exact']:+.4f} bits/dim; "
              f"score error^2/d {row['score_error_sq_per_dim']:.3e}; t dU/dt / d error: "
              f"mean {row['time_score_bias']:+.5f}, rms {row['time_score_rmse']:.5f} "
              f"(exact rms {row['time_score_rms_exact']:.5f})")
    print(f"NLL error {paired:+.4f} bits/dim; KL implied by the score errors alone "
          f"{by_level['kl_from_scores_bits_per_dim']:.4f} bits/dim")
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        write_text_atomic(args.out, text + "\n")


if __name__ == "__main__":
    main()
