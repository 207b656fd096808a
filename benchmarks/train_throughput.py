"""Training throughput: priorlab's DenoiserModule under Lightning's Trainer vs a plain PyTorch loop.

Both run in one process on the same network, batch, patch size, precision, compile and memory-format
settings, with the same objective (blind denoising MSE, one σ per image drawn on the device, Adam),
so the ratio lightning/plain is the cost of the Lightning shell. Data loading is not measured: the
random patches are made on the device before timing, and by default (``--lightning-data device``)
Lightning is fed the very same device tensors through a plain iterable; ``--lightning-data loader``
feeds it a DataLoader over a CPU tensor dataset instead (pinned memory on CUDA), which adds the
host-to-device copy a real run pays. The first ``--warmup`` steps (compilation, cuDNN autotuning)
are excluded from the timing.

``--sync-debug`` (CUDA only) counts the host-device synchronizations in the timed steps instead of timing
cleanly: torch's sync debug mode warns at every synchronizing CUDA call, and the warnings are tallied by the
line that made them (a per-step sync stalls the GPU's queue; docs/benchmarks.md).

Examples:
    python benchmarks/train_throughput.py --preset dncnn --precision bf16-mixed --compile --channels-last
    python benchmarks/train_throughput.py --arch test_bf_dncnn --steps 5 --warmup 2 --batch 8 \\
        --device cpu --precision 32-true
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from priorlab.files import refuse_to_replace, write_text_atomic

PRESETS: dict[str, dict[str, Any]] = {
    "dncnn": {"arch": "bf_dncnn", "in_chans": 1, "patch": 50},  # BF-DnCNN recipe (algorithms.md §2.6)
    "unet": {"arch": "bf_unet", "in_chans": 3, "patch": 64},
}
PRECISIONS = ("32-true", "bf16-mixed")
SIGMA_RANGE_255 = (0.0, 100.0)


@dataclass(frozen=True)
class BenchConfig:
    """One throughput measurement's settings (the same for both contenders)."""

    arch: str = "bf_dncnn"
    in_chans: int = 1
    patch: int = 50
    batch: int = 128
    steps: int = 200
    warmup: int = 30
    precision: str = "bf16-mixed"
    compile: bool = False
    compile_mode: str | None = None
    fused_adam: bool = False
    channels_last: bool = False
    device: str = "cuda"
    seed: int = 0
    lightning_data: str = "device"
    pool: int = 16
    sync_debug: bool = False


@dataclass(frozen=True)
class Throughput:
    """Timing of ``steps`` optimizer steps after the warm-up."""

    name: str
    steps: int
    seconds: float
    images_per_second: float
    final_loss: float
    peak_memory_gib: float | None
    syncs: int | None = None  # --sync-debug: synchronizing CUDA calls in the timed steps
    sync_sites: dict[str, int] | None = None  # and where they came from (file:line of the Python caller)


# ---- shared pieces ---------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SyncCounter:
    """Records torch's sync-debug warnings between ``start()`` and ``stop()`` (a no-op unless enabled)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.records: list[warnings.WarningMessage] = []
        self._catcher: Any = None

    def __enter__(self) -> SyncCounter:
        if self.enabled:
            self._catcher = warnings.catch_warnings(record=True)
            self.records = self._catcher.__enter__()
            warnings.simplefilter("always")
        return self

    def start(self) -> None:
        if self.enabled:
            self.records.clear()
            torch.cuda.set_sync_debug_mode("warn")

    def stop(self) -> None:
        if self.enabled:
            torch.cuda.set_sync_debug_mode("default")

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._catcher is not None:
            self._catcher.__exit__(*exc)

    def result(self) -> dict[str, Any]:
        if not self.enabled:
            return {}
        hits = [w for w in self.records if "synchronizing" in str(w.message)]
        sites: dict[str, int] = {}
        for w in hits:
            site = f"{Path(w.filename).name}:{w.lineno}"
            sites[site] = sites.get(site, 0) + 1
        return {"syncs": len(hits), "sync_sites": dict(sorted(sites.items(), key=lambda kv: -kv[1]))}


def make_patches(cfg: BenchConfig) -> torch.Tensor:
    """A pool of ``cfg.pool`` batches of random clean patches (pool, B, C, P, P) in [0, 1] on the device.

    Cycled through by both loops, so neither measures data loading or pays for a large pool.
    """
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.rand(cfg.pool, cfg.batch, cfg.in_chans, cfg.patch, cfg.patch, generator=g)
    return x.to(cfg.device)


def _reset(cfg: BenchConfig) -> None:
    """Start each contender from the same state: same init seed, fresh compile caches, memory stats."""
    torch.manual_seed(cfg.seed)
    if cfg.compile:
        torch._dynamo.reset()  # the second model must compile from scratch too, not reuse the first's graphs
    if torch.device(cfg.device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_memory(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# ---- (a) plain PyTorch ----------------------------------------------------------------------------
def run_plain(cfg: BenchConfig, patches: torch.Tensor) -> Throughput:
    """The reference loop: the same work as ``DenoiserModule.training_step`` without Lightning."""
    from priorlab.core import add_noise, denoising_loss, sample_sigmas, sigma_from_255
    from priorlab.lightning_modules.denoiser import adam, training_noise_seed
    from priorlab.zoo import create_model

    _reset(cfg)
    device = torch.device(cfg.device)
    model = create_model(cfg.arch, in_chans=cfg.in_chans).to(device).train()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.compile:
        model.compile(mode=cfg.compile_mode)
    opt = adam(model, lr=1e-3, weight_decay=0.0, fused=cfg.fused_adam)
    lo, hi = (float(sigma_from_255(s)) for s in SIGMA_RANGE_255)
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16-mixed"
           else contextlib.nullcontext())
    start, loss = 0.0, torch.zeros(())
    # The module's training noise: its own generator, seeded from the run's seed, rank 0, step 0.
    noise = torch.Generator(device=device).manual_seed(training_noise_seed(torch.initial_seed(), 0, 0))
    with SyncCounter(cfg.sync_debug) as syncs:
        for step in range(cfg.warmup + cfg.steps):
            if step == cfg.warmup:
                _sync(device)
                start = time.perf_counter()
                syncs.start()
            x = patches[step % len(patches)]
            y, _ = add_noise(x, sample_sigmas(x.shape[0], lo, hi, device=device, generator=noise), generator=noise)
            if cfg.channels_last:
                y = y.contiguous(memory_format=torch.channels_last)
            with amp:  # Lightning's bf16-mixed autocasts the whole training_step, loss included
                loss = denoising_loss(model(y), x).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        syncs.stop()
    _sync(device)
    seconds = time.perf_counter() - start
    return Throughput("plain PyTorch", cfg.steps, seconds, cfg.steps * cfg.batch / seconds, float(loss.detach()),
                      _peak_memory(device), **syncs.result())


# ---- (b) priorlab + Lightning ---------------------------------------------------------------------
class DeviceBatches:
    """An iterable of pre-made device batches, cycled: Lightning's input without a DataLoader."""

    def __init__(self, patches: torch.Tensor, length: int) -> None:
        self.patches, self.length = patches, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in range(self.length):
            yield self.patches[i % len(self.patches)]


def _step_timer(warmup: int, device: torch.device, syncs: SyncCounter) -> Any:
    import lightning.pytorch as pl

    class StepTimer(pl.Callback):
        """Clock from the start of batch ``warmup`` to the end of training."""

        def __init__(self) -> None:
            self.start: float | None = None
            self.end: float | None = None
            self.first_step = 0
            self.steps = 0

        def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                 batch_idx: int) -> None:
            if batch_idx == warmup and self.start is None:
                _sync(device)
                self.start, self.first_step = time.perf_counter(), trainer.global_step
                syncs.start()

        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            syncs.stop()
            _sync(device)
            self.end = time.perf_counter()
            self.steps = trainer.global_step - self.first_step

    return StepTimer()


def run_lightning(cfg: BenchConfig, patches: torch.Tensor) -> Throughput:
    """DenoiserModule + Trainer, no validation, logging, checkpointing or progress bar."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from priorlab.lightning_modules import DenoiserModule

    _reset(cfg)
    device = torch.device(cfg.device)
    total = cfg.warmup + cfg.steps
    module = DenoiserModule(arch=cfg.arch, in_chans=cfg.in_chans, sigma_range_255=SIGMA_RANGE_255,
                            val_sigmas_255=(), compile=cfg.compile, compile_mode=cfg.compile_mode,
                            fused_adam=cfg.fused_adam, channels_last=cfg.channels_last)
    if cfg.lightning_data == "device":
        data: Any = DeviceBatches(patches, total)
    elif cfg.lightning_data == "loader":
        flat = patches.cpu().flatten(0, 1)
        index = torch.arange(total * cfg.batch) % len(flat)  # the same cycle of batches as the pool
        data = DataLoader(TensorDataset(flat[index]), batch_size=cfg.batch, shuffle=False,
                          pin_memory=device.type == "cuda", num_workers=0)
    else:
        raise ValueError(f"lightning_data must be 'device' or 'loader', got {cfg.lightning_data!r}")
    counter = SyncCounter(cfg.sync_debug)
    timer = _step_timer(cfg.warmup, device, counter)
    on_gpu = device.type == "cuda"
    trainer = pl.Trainer(
        accelerator="gpu" if on_gpu else "cpu", devices=[device.index or 0] if on_gpu else 1,
        precision=cfg.precision, max_steps=total, max_epochs=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, benchmark=torch.backends.cudnn.benchmark,
        callbacks=[timer],
    )
    with counter:
        trainer.fit(module, train_dataloaders=data)
    if timer.start is None or timer.end is None or timer.steps <= 0:
        raise RuntimeError(f"Lightning ran {trainer.global_step} steps; need more than warmup={cfg.warmup}")
    seconds = timer.end - timer.start
    loss = trainer.callback_metrics.get("train/loss", torch.tensor(float("nan")))
    return Throughput("priorlab + Lightning", timer.steps, seconds, timer.steps * cfg.batch / seconds,
                      float(loss), _peak_memory(device), **counter.result())


# ---- report ----------------------------------------------------------------------------------------
def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def markdown_rows(cfg: BenchConfig, plain: Throughput, lightning: Throughput, machine: dict[str, Any]) -> str:
    """Table header and one row, ready to paste into docs/benchmarks.md."""
    hw = machine.get("gpu") or f"{machine['cpu']} ({machine['cpu_count']} cores)"
    compiled = (f"yes ({cfg.compile_mode})" if cfg.compile_mode else "yes") if cfg.compile else "no"
    adam_kind = "fused" if cfg.fused_adam and cfg.device.startswith("cuda") else "default"
    header = ("| machine | arch | C | patch | batch | precision | compile | Adam | channels-last | Lightning data | "
              "plain img/s | Lightning img/s | Lightning/plain |")
    row = (f"| {hw} | {cfg.arch} | {cfg.in_chans} | {cfg.patch} | {cfg.batch} | {cfg.precision} | "
           f"{compiled} | {adam_kind} | {'yes' if cfg.channels_last else 'no'} | "
           f"{cfg.lightning_data} | "
           f"{_rate(plain.images_per_second)} | {_rate(lightning.images_per_second)} | "
           f"{lightning.images_per_second / plain.images_per_second:.3f} |")
    columns = len(header.strip("|").split("|"))
    return "\n".join([header, "|" + "---|" * columns, row])


def write_json(path: Path, payload: dict[str, Any], overwrite: bool) -> None:
    refuse_to_replace(path, overwrite=overwrite)
    write_text_atomic(path, json.dumps(payload, indent=1))


def parse_args(argv: list[str] | None = None) -> tuple[BenchConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="dncnn: bf_dncnn, 1 ch, 50×50; unet: bf_unet, 3 ch, 64×64 "
                        "(explicit --arch/--in-chans/--patch win)")
    p.add_argument("--arch", help="registry name (default bf_dncnn)")
    p.add_argument("--in-chans", type=int, help="image channels (default 1)")
    p.add_argument("--patch", type=int, help="patch size in pixels (default 50)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=200, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=30, help="untimed steps first (compilation, autotuning)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="default: bf16-mixed on CUDA, 32-true on CPU")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--compile-mode", choices=("default", "reduce-overhead", "max-autotune",
                                              "max-autotune-no-cudagraphs"), default=None,
                   help="torch.compile mode for both loops (reduce-overhead: CUDA graphs)")
    p.add_argument("--fused-adam", action="store_true", help="fused Adam (CUDA) in both loops")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--lightning-data", choices=("device", "loader"), default="device",
                   help="device: the same pre-made device tensors (default, fair); loader: a DataLoader over "
                        "CPU tensors with pinned memory (adds the host-to-device copy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sync-debug", action="store_true",
                   help="CUDA: count host-device synchronizations in the timed steps (timings then not clean)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 avoids OpenMP thrashing on a busy machine)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT",
                   help="write the numbers and the machine here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = p.parse_args(argv)
    preset = PRESETS[args.preset] if args.preset else {}
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available; use --device cpu")
    if args.sync_debug and device.type != "cuda":
        p.error("--sync-debug needs --device cuda (torch's sync debug mode watches CUDA calls)")
    if min(args.batch, args.steps) < 1 or args.warmup < 0:
        p.error("--batch and --steps must be >= 1 and --warmup >= 0")
    cfg = BenchConfig(
        arch=args.arch or preset.get("arch", "bf_dncnn"),
        in_chans=args.in_chans or preset.get("in_chans", 1),
        patch=args.patch or preset.get("patch", 50),
        batch=args.batch, steps=args.steps, warmup=args.warmup,
        precision=args.precision or ("bf16-mixed" if device.type == "cuda" else "32-true"),
        compile=args.compile, compile_mode=args.compile_mode, fused_adam=args.fused_adam,
        channels_last=args.channels_last, device=str(device), seed=args.seed,
        lightning_data=args.lightning_data, sync_debug=args.sync_debug,
    )
    return replace(cfg, pool=min(cfg.pool, cfg.warmup + cfg.steps)), args


def main(argv: list[str] | None = None) -> int:
    from priorlab.benchmarks import describe_machine

    cfg, args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    refuse_to_replace(args.json, overwrite=args.overwrite)
    # The same cuDNN autotuning for both (Lightning's Trainer(benchmark=...) is given this value).
    torch.backends.cudnn.benchmark = torch.device(cfg.device).type == "cuda"
    patches = make_patches(cfg)
    plain = run_plain(cfg, patches)
    lightning = run_lightning(cfg, patches)
    machine = describe_machine(cfg.device) | {"torch_threads": torch.get_num_threads()}
    print(f"config: {asdict(cfg)}")
    for r in (plain, lightning):
        mem = f", peak {r.peak_memory_gib:.2f} GiB" if r.peak_memory_gib is not None else ""
        print(f"{r.name:>22}: {r.images_per_second:10,.1f} img/s ({1e3 * r.seconds / r.steps:.2f} ms/step "
              f"over {r.steps} steps, final loss {r.final_loss:.4g}{mem})")
        if r.syncs is not None:
            print(f"{'':>22}  {r.syncs} synchronizing CUDA calls in {r.steps} steps: {r.sync_sites}")
    ratio = lightning.images_per_second / plain.images_per_second
    print(f"{'Lightning/plain':>22}: {ratio:.3f}")
    print()
    print(markdown_rows(cfg, plain, lightning, machine))
    if args.json is not None:
        write_json(args.json, {"config": asdict(cfg), "plain": asdict(plain), "lightning": asdict(lightning),
                               "ratio_lightning_over_plain": ratio, "machine": machine,
                               "command": ["python", *sys.argv]}, args.overwrite)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
