"""Energy-model throughput: one-pass ``log_prob`` and the dual score matching training step.

Measures, on one device, for an energy network (default: the paper's ``energy_unet``, 64x64 RGB, batch 128):

* ``log_prob`` images/s — the real ``EnergyNet.log_prob`` (float32, TF32 and autocast off), beside a plain
  ``torch.no_grad`` forward pass of the same UNet f_θ(y, t) under the same precision (what one-pass log p
  cannot beat: log p = −(½⟨x, f_θ(x, 0)⟩ + C) is that forward pass plus an inner product), and, for
  reference, that forward with TF32 convolutions and under bf16 autocast (precisions log_prob does not use);
* the training step of ``DualScoreModule`` (its own loss terms: U, ∇_yU and ∂_tU with ``create_graph=True``,
  ℓ_DSM + ℓ_TSM, backward through the double backward, Adam) beside the plain denoiser step of the same UNet
  (f_θ(y, t) regressed on the clean image, MSE, backward, Adam), both under the chosen autocast precision;
  their ratio is the price of learning a normalized energy instead of a denoiser.

Timings exclude ``--warmup`` steps (cuDNN autotuning) and synchronize the device. C is set to 0 for the timing
(log_prob refuses an uncalibrated network; the constant does not change the cost).

    python benchmarks/energy_throughput.py --device cuda --json out.json          # on a GPU
    python benchmarks/energy_throughput.py --arch test_energy_unet --batch 4 --size 16 --steps 2 --warmup 1 \\
        --device cpu                                                             # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from priorlab.benchmarks.denoising import describe_machine
from priorlab.core.energy import full_precision
from priorlab.files import refuse_to_replace, write_text_atomic
from priorlab.lightning_modules import DualScoreModule


def _timed(fn: Callable[[], object], *, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls (device synchronized)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - start) / steps


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "32-true":
        return contextlib.nullcontext()
    raise ValueError(f"precision must be 32-true or bf16-mixed, got {precision!r}")


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    module = DualScoreModule(arch=args.arch, in_chans=args.in_chans).to(device)
    net = module.net
    shape = (args.batch, args.in_chans, args.size, args.size)
    x = torch.randint(0, 256, shape, device=device).float() / 255  # 8-bit images in [0, 1]
    if args.channels_last:
        net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    results: dict = {"machine": describe_machine(device), "arch": args.arch, "shape": list(shape),
                     "parameters": sum(p.numel() for p in net.parameters()), "steps": args.steps,
                     "warmup": args.warmup, "train_precision": args.precision,
                     "cudnn_benchmark": args.cudnn_benchmark, "channels_last": args.channels_last,
                     "compile": args.compile}

    # ---- one-pass log p vs a plain forward of the same UNet (float32, TF32 off) ------------------------
    net.eval()
    net.log_norm_const.fill_(0.0)  # speed only: the value of C does not matter here
    net.calibration_shape = tuple(x.shape[1:])
    t0 = torch.zeros(args.batch, device=device)

    def forward() -> torch.Tensor:
        with torch.no_grad(), full_precision():
            return net.unet(x, t0)

    if args.compile:  # the forward only: double backward (training) cannot be compiled
        eager = net.log_prob(x)
        net.unet.compile()
        results["compiled_max_abs_diff_nats"] = float((net.log_prob(x) - eager).abs().max())  # compiles here
    sec_lp = _timed(lambda: net.log_prob(x), steps=args.steps, warmup=args.warmup, device=device)
    sec_fw = _timed(forward, steps=args.steps, warmup=args.warmup, device=device)
    results["log_prob_img_per_s"] = args.batch / sec_lp
    results["plain_forward_fp32_img_per_s"] = args.batch / sec_fw
    print(f"log_prob (fp32, TF32 off): {args.batch / sec_lp:10,.1f} img/s   plain forward of the UNet: "
          f"{args.batch / sec_fw:10,.1f} img/s   ratio {sec_fw / sec_lp:.3f}", flush=True)

    # For reference only (log_prob never runs so): the same forward with TF32 convolutions, and under bf16.
    def forward_tf32() -> torch.Tensor:
        before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        try:
            with torch.no_grad():
                return net.unet(x, t0)
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before

    def forward_bf16() -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            return net.unet(x, t0)

    sec_tf32 = _timed(forward_tf32, steps=args.steps, warmup=args.warmup, device=device)
    sec_bf16 = _timed(forward_bf16, steps=args.steps, warmup=args.warmup, device=device)
    results["plain_forward_tf32_img_per_s"] = args.batch / sec_tf32
    results["plain_forward_bf16_img_per_s"] = args.batch / sec_bf16
    print(f"plain forward for reference: TF32 {args.batch / sec_tf32:10,.1f} img/s, bf16 autocast "
          f"{args.batch / sec_bf16:10,.1f} img/s", flush=True)

    if args.skip_training or args.compile:
        return results
    # ---- training steps: dual score matching vs plain denoiser, same UNet, same precision ----------------
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    def energy_step() -> None:
        y, t = module.corrupt(x)
        with _autocast(device, args.precision):
            dsm, tsm = module._loss_terms(x, y, t, create_graph=True)
            loss = (dsm + tsm).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def denoiser_step() -> None:
        y, t = module.corrupt(x)
        with _autocast(device, args.precision):
            loss = (net.unet(y, t).float() - x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sec_e = _timed(energy_step, steps=args.steps, warmup=args.warmup, device=device)
    mem_e = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sec_d = _timed(denoiser_step, steps=args.steps, warmup=args.warmup, device=device)
    mem_d = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    results.update({"energy_step_img_per_s": args.batch / sec_e, "denoiser_step_img_per_s": args.batch / sec_d,
                    "energy_over_denoiser": sec_d / sec_e, "energy_step_peak_gib": mem_e,
                    "denoiser_step_peak_gib": mem_d})
    print(f"training step ({args.precision}): dual score matching {args.batch / sec_e:10,.1f} img/s, plain "
          f"denoiser {args.batch / sec_d:10,.1f} img/s, ratio {sec_d / sec_e:.3f}"
          + (f"; peak memory {mem_e:.1f} vs {mem_d:.1f} GiB" if mem_e is not None else ""), flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="energy_unet")
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--precision", default="bf16-mixed", choices=("32-true", "bf16-mixed"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=False,
                   help="let cuDNN time its algorithms for these shapes (torch.backends.cudnn.benchmark)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False,
                   help="network and images in channels_last memory format")
    p.add_argument("--skip-training", action="store_true", help="measure log_prob and the forward pass only")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet's forward (log_prob and forward only; implies --skip-training)")
    p.add_argument("--json", type=Path, default=None, help="write the figures here (JSON)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = p.parse_args(argv)
    refuse_to_replace(args.json, overwrite=args.overwrite)
    results = run(args)
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
