"""One-pass energy log p vs the probability-flow ODE estimate, side by side on the same model and images.

    python benchmarks/logp_speed.py                      # train energy_unet_small for a minute, CPU
    python benchmarks/logp_speed.py --ckpt CKPT          # a trained Fashion-MNIST energy model

Model: the energy checkpoint given with ``--ckpt``; otherwise ``energy_unet_small`` trained with
``DualScoreModule`` for ``--train_seconds`` on Fashion-MNIST train (minus the last 2,000 images, which
calibrate C; 500 of them are used). Images: the first Fashion-MNIST test images. Both estimators run on the same
``--ode_images`` images (same model, no dequantization); the energy estimator also runs on
``--energy_images`` images for its bits/dim and throughput. A Gaussian-field row checks both estimators
against the closed-form log-density on the same code path. Prints a Markdown table and writes
docs/figures/logp_speed.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from priorlab.benchmarks.denoising import describe_machine
from priorlab.benchmarks.logp import LogProbResult, energy_log_prob, ode_log_prob
from priorlab.files import refuse_to_replace, write_text_atomic

REPO = Path(__file__).resolve().parents[1]


def train_small_energy(seconds: float, train: torch.Tensor, held_out: torch.Tensor, seed: int,
                       save_ckpt: str | None = None) -> torch.nn.Module:
    """energy_unet_small trained by dual score matching for a wall-clock budget, then calibrated.

    With ``save_ckpt`` the calibrated model is also written as a priorlab checkpoint (for ``priorlab logp``).
    """
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from priorlab.lightning_modules.dual_score import DualScoreModule

    pl.seed_everything(seed, verbose=False)
    module = DualScoreModule(arch="energy_unet_small", in_chans=1, log10_t_range=(-6.0, 3.0), lr=1e-3)
    loader = DataLoader(train.float() / 255.0, batch_size=32, shuffle=True)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_time={"seconds": seconds}, max_epochs=1000,
                         limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, inference_mode=False)
    trainer.fit(module, train_dataloaders=loader)
    net = module.net.eval()
    net.calibrate(held_out[:500].float() / 255.0, generator=torch.Generator().manual_seed(seed))
    net.prior_config = {"kind": "energy", "arch_config": net.arch_config, "channels": 1,
                        "log10_t_range": [-6.0, 3.0], "train_steps": trainer.global_step, "train_seconds": seconds}
    if save_ckpt:
        trainer.save_checkpoint(save_ckpt)  # DualScoreModule adds the priorlab metadata; C is a buffer
    return net


def gaussian_reference(seed: int) -> dict:
    """Energy and ODE estimators on an exact Gaussian-field energy (28×28) vs the closed form."""
    from priorlab.core.energy import GaussianEnergy
    from priorlab.core.gaussian_field import GaussianField

    field = GaussianField(28, alpha=2.0, variance=0.01, channels=1, mean=0.5)
    model = GaussianEnergy(field, offset=0.0)
    model.log_norm_const.fill_(0.0)  # exact: the offset is 0
    x = field.sample(4, torch.Generator().manual_seed(seed), dtype=torch.float64)
    exact = field.log_prob_noisy(x, 0.002)
    e = energy_log_prob(model, x.float(), levels=None)
    o = ode_log_prob(model, x, levels=None, dtype=torch.float64, sigma_max=80.0, prior_mean=0.5, batch_size=4,
                     generator=torch.Generator().manual_seed(seed))
    per_dim = 784
    return {"exact_nats_per_dim": float(exact.mean()) / per_dim,
            "energy_nats_per_dim": float(e.log_prob.mean()) / per_dim,
            "ode_nats_per_dim": float(o.log_prob.mean()) / per_dim, "ode_nfe": o.nfe,
            "energy_seconds_per_image": e.seconds / e.num_images, "ode_seconds_per_image": o.seconds / o.num_images}


def row(name: str, r: LogProbResult) -> dict:
    stderr = r.stderr_bpd if math.isfinite(r.stderr_bpd) else None
    return {"estimator": name, "images": r.num_images, "bits_per_dim": r.mean_bpd, "stderr": stderr,
            "nfe_per_image": r.nfe, "seconds": r.seconds, "images_per_second": r.images_per_second,
            "seconds_per_image": r.seconds / r.num_images, "settings": r.settings}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="trained energy checkpoint or prior name (default: train one)")
    p.add_argument("--train_seconds", type=float, default=120.0)
    p.add_argument("--ode_images", type=int, default=4)
    p.add_argument("--energy_images", type=int, default=1000)
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save_ckpt", default=None, help="also save the model trained here (.ckpt)")
    p.add_argument("--out", default=str(REPO / "docs" / "figures" / "logp_speed.json"))
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = p.parse_args()
    refuse_to_replace(args.out, overwrite=args.overwrite)
    torch.set_num_threads(args.threads)

    from priorlab.datamodules.fashion_mnist import load_fashion_mnist

    test = load_fashion_mnist("test")
    if args.ckpt:
        from priorlab.zoo import load

        net, source = load(args.ckpt), args.ckpt
    else:
        train = load_fashion_mnist("train")
        t0 = time.perf_counter()
        net = train_small_energy(args.train_seconds, train[:-2000], train[-2000:], args.seed, args.save_ckpt)
        source = (f"energy_unet_small trained {time.perf_counter() - t0:.0f} s on CPU "
                  f"({net.prior_config['train_steps']} steps, batch 32)")
    lo_hi = net.prior_config.get("log10_t_range", [-9.0, 3.0])
    sigma_max = math.sqrt(10.0 ** lo_hi[1])
    same = test[:args.ode_images]
    energy_same = energy_log_prob(net, same, batch_size=args.ode_images)
    ode = ode_log_prob(net, same, batch_size=args.ode_images, sigma_max=sigma_max,
                       prior_mean=float(test.double().mean() / 255), rtol=args.rtol, atol=args.atol,
                       generator=torch.Generator().manual_seed(args.seed))
    energy_all = energy_log_prob(net, test[:args.energy_images], batch_size=128)
    ratio = (ode.seconds / ode.num_images) / (energy_all.seconds / energy_all.num_images)
    ratio_same = ode.seconds / energy_same.seconds
    gauss = gaussian_reference(args.seed)

    rows = [row(f"energy (same {args.ode_images} images)", energy_same), row("ODE (dopri5, Hutchinson 1 probe)", ode),
            row(f"energy ({args.energy_images} test images)", energy_all)]
    print(f"model: {source}\nimages: Fashion-MNIST test (t10k), no dequantization, 8-bit bits/dim\n")
    print("| estimator | images | bits/dim | NFE/image | seconds | images/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['estimator']} | {r['images']} | {r['bits_per_dim']:.3f} ± {r['stderr']:.3f} | "
              f"{r['nfe_per_image']:.0f} | {r['seconds']:.3f} | {r['images_per_second']:.2f} |")
    print(f"\ntime per image, ODE / energy: {ratio:.0f}x (energy batch 128); same batch of {args.ode_images}: "
          f"{ratio_same:.0f}x")
    print(f"Gaussian field 28x28 (nats/dim): exact {gauss['exact_nats_per_dim']:.5f}, energy "
          f"{gauss['energy_nats_per_dim']:.5f}, ODE {gauss['ode_nats_per_dim']:.5f} ({gauss['ode_nfe']:.0f} NFE)")
    record = {"command": "python benchmarks/logp_speed.py " + " ".join(
                  f"--{k} {v}" for k, v in vars(args).items() if k != "out" and v is not None),
              "model": source, "machine": describe_machine("cpu"), "threads": args.threads,
              "date": time.strftime("%Y-%m-%d"), "rows": rows, "ratio_per_image": ratio,
              "ratio_same_batch": ratio_same, "gaussian_reference": gauss}
    write_text_atomic(args.out, json.dumps(record, indent=2, default=str) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
