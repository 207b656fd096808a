"""Throughput of batched sampling (Algorithm 1, ``priorlab.samplers.sample_adaptive``) at several batch sizes.

For each batch size B: one short untimed run (cuDNN set-up, allocations), then a full run from its own seed,
timed with the device synchronized. Reports samples/s (B over the wall time of the whole batch: a batch
finishes with its slowest sample), the steps per sample (mean, max), the fraction that converged, and
sample-steps/s (denoiser evaluations of running samples per second). Default prior: the bundled
``bf-unet-small-color`` at 64x64, the issue's setting.

    python benchmarks/sampling_throughput.py --device cuda --json out.json          # on a GPU
    python benchmarks/sampling_throughput.py --prior bf-dncnn-small-gray --size 16 --batches 1 2 --max-steps 20 \\
        --device cpu                                                               # smoke test
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from priorlab.benchmarks.denoising import describe_machine
from priorlab.files import refuse_to_replace, write_text_atomic
from priorlab.samplers import sample_adaptive
from priorlab.zoo import load


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    net = load(args.prior).to(device)
    channels = int(net.prior_config["channels"])
    rows = []
    for batch in args.batches:
        shape = (batch, channels, args.size, args.size)
        kwargs = dict(beta=args.beta, h0=args.h0, device=device)
        sample_adaptive(net, shape, max_steps=3, generator=torch.Generator(device).manual_seed(args.seed), **kwargs)
        _sync(device)
        start = time.perf_counter()
        res = sample_adaptive(net, shape, max_steps=args.max_steps,
                              generator=torch.Generator(device).manual_seed(args.seed + 1), **kwargs)
        _sync(device)
        seconds = time.perf_counter() - start
        steps = res.steps.float()
        row = {"batch": batch, "seconds": seconds, "samples_per_s": batch / seconds,
               "sample_steps_per_s": float(steps.sum()) / seconds, "steps_mean": float(steps.mean()),
               "steps_max": int(steps.max()), "converged": float(res.converged.float().mean())}
        rows.append(row)
        print(f"batch {batch:4d}: {row['samples_per_s']:9.2f} samples/s, {row['sample_steps_per_s']:10.1f} "
              f"sample-steps/s, steps {row['steps_mean']:.1f} (max {row['steps_max']}), converged "
              f"{100 * row['converged']:.0f} %, {seconds:.2f} s", flush=True)
    return {"machine": describe_machine(device), "prior": args.prior, "size": args.size, "channels": channels,
            "beta": args.beta, "h0": args.h0, "max_steps": args.max_steps, "cudnn_benchmark": args.cudnn_benchmark,
            "rows": rows}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prior", default="bf-unet-small-color", help="prior name or checkpoint")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--h0", type=float, default=0.01)
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--json", type=Path, default=None, help="write the figures here (JSON)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = p.parse_args(argv)
    refuse_to_replace(args.json, overwrite=args.overwrite)
    if min(args.batches) < 1 or args.size < 1:
        p.error("batch sizes and --size must be >= 1")
    results = run(args)
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
