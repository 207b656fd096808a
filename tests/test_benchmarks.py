"""Benchmarks: denoising-quality protocol (library) and the training-throughput script (tiny, CPU)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from priorlab.benchmarks import (
    BF_DNCNN_BSD68,
    DenoisingRecord,
    benchmark_noise,
    evaluate_bm3d,
    evaluate_denoiser,
    format_markdown_table,
    noise_seed,
    noisy_image,
    summarize,
)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _smooth(channels: int = 1, size: int = 32, phase: float = 0.0) -> torch.Tensor:
    """A smooth image in [0.2, 0.8] (C, size, size)."""
    t = torch.linspace(0, math.pi, size)
    img = 0.5 + 0.3 * torch.sin(t[:, None] + phase) * torch.cos(t[None, :])
    return img.expand(channels, -1, -1).clone()


def _identity(y: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    return y.clone()


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


# ---- noise -----------------------------------------------------------------------------------------
def test_noise_is_deterministic_and_distinct_across_images_and_sigmas():
    a = benchmark_noise((1, 16, 16), 25, seed=0, index=3)
    assert torch.equal(a, benchmark_noise((1, 16, 16), 25.0, seed=0, index=3))
    z = a / (25 / 255)
    # Same standard normal draw at another σ would make levels correlated; the seed includes σ.
    assert not torch.allclose(z, benchmark_noise((1, 16, 16), 50, seed=0, index=3) / (50 / 255))
    assert not torch.equal(a, benchmark_noise((1, 16, 16), 25, seed=0, index=4))
    assert not torch.equal(a, benchmark_noise((1, 16, 16), 25, seed=1, index=3))
    assert noise_seed(0, 1, 25) != noise_seed(1, 0, 25)
    assert a.dtype == torch.float32 and a.device.type == "cpu"


def test_noisy_input_not_clipped_unless_asked():
    x = torch.full((1, 16, 16), 0.99)
    y = noisy_image(x, 50, seed=0, index=0)
    assert y.max() > 1
    assert noisy_image(x, 50, seed=0, index=0, clip=True).max() <= 1


# ---- evaluate_denoiser -----------------------------------------------------------------------------
def test_identity_denoiser_output_psnr_is_input_psnr_when_input_clipped():
    images = [_smooth(), _smooth(phase=1.0)]
    recs = evaluate_denoiser(_identity, images, [10, 50], clip_input=True)
    assert len(recs) == 4 and [r.sigma_255 for r in recs] == [10, 10, 50, 50]
    for r in recs:
        assert r.psnr == pytest.approx(r.psnr_in, abs=1e-4)
        assert r.psnr_in == pytest.approx(-20 * math.log10(r.sigma_255 / 255), abs=1.0)


def test_identity_denoiser_output_clamp_only_helps_when_input_unclipped():
    x = torch.full((1, 16, 16), 0.95)  # near the top: clamping the output removes error
    (r,) = evaluate_denoiser(_identity, [x], [50])
    assert r.psnr > r.psnr_in + 0.5


def test_oracle_denoiser_is_perfect_and_batching_does_not_change_results():
    images = [_smooth(), _smooth(phase=0.5), _smooth(size=24)]

    def oracle(y: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        # The clean image closest to each noisy one: knows the answer without knowing the index.
        same = [x for x in images if x.shape == y.shape[1:]]
        return torch.stack([min(same, key=lambda x: float((yi - x).pow(2).sum())) for yi in y])

    recs = evaluate_denoiser(oracle, images, [25])
    assert all(r.psnr == math.inf or r.psnr > 100 for r in recs)
    assert all(r.ssim == pytest.approx(1.0) for r in recs)
    one = evaluate_denoiser(_identity, images, [25], batch_size=1)
    two = evaluate_denoiser(_identity, images, [25], batch_size=2)  # sizes differ: batches [0, 1], [2]
    assert [r.psnr for r in one] == pytest.approx([r.psnr for r in two])
    assert [r.ssim for r in one] == pytest.approx([r.ssim for r in two])
    assert [r.psnr_in for r in one] == [r.psnr_in for r in two]


def test_evaluate_denoiser_rejects_out_of_range_images():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate_denoiser(_identity, [torch.full((1, 8, 8), 2.0)], [25])


def test_summary_and_markdown_table():
    recs = evaluate_denoiser(_identity, [_smooth(), _smooth(phase=1.0)], [10, 25], dataset="bsd68",
                             method="id", names=["a.png", "b.png"])
    summary = summarize(recs)
    assert set(summary) == {("id", "bsd68", 10.0), ("id", "bsd68", 25.0)}
    assert summary[("id", "bsd68", 10.0)]["n"] == 2
    table = format_markdown_table(summary)
    assert "BF-DnCNN" in table and f"{BF_DNCNN_BSD68.psnr[10]:.2f}" in table
    assert "29.16" in table  # DnCNN-B at σ = 25
    assert len(table.strip().splitlines()) == 4


# ---- BM3D ------------------------------------------------------------------------------------------
def test_bm3d_sees_the_same_noise_and_improves_a_smooth_image():
    pytest.importorskip("bm3d")
    x = _smooth()
    cache: dict = {}
    (rec,) = evaluate_bm3d([x], [25], seed=7, cache=cache)
    (ident,) = evaluate_denoiser(_identity, [x], [25], seed=7)
    assert rec.psnr_in == ident.psnr_in  # identical noisy input
    assert rec.psnr > rec.psnr_in + 3
    assert len(cache) == 1
    (again,) = evaluate_bm3d([x], [25], seed=7, cache=cache)
    assert again == rec  # served from the cache
    fake = {k: {**v, "psnr": 99.0} for k, v in cache.items()}
    assert evaluate_bm3d([x], [25], seed=7, cache=fake)[0].psnr == 99.0


def test_bm3d_color():
    pytest.importorskip("bm3d")
    x = torch.stack([_smooth()[0], _smooth(phase=0.7)[0], _smooth(phase=1.4)[0]])
    (rec,) = evaluate_bm3d([x], [25])
    assert isinstance(rec, DenoisingRecord) and rec.psnr > rec.psnr_in + 3


# ---- training throughput script --------------------------------------------------------------------
def test_train_throughput_runs_both_loops_on_cpu():
    bench = _load_script("train_throughput")
    cfg, _ = bench.parse_args(["--arch", "test_bf_dncnn", "--steps", "2", "--warmup", "1", "--batch", "2",
                               "--patch", "16", "--device", "cpu", "--precision", "32-true"])
    patches = bench.make_patches(cfg)
    assert patches.shape == (3, 2, 1, 16, 16)
    plain = bench.run_plain(cfg, patches)
    lightning = bench.run_lightning(cfg, patches)
    assert plain.steps == lightning.steps == 2
    assert plain.images_per_second > 0 and lightning.images_per_second > 0
    # Same init, same data, same RNG stream: the two loops do the same arithmetic.
    assert lightning.final_loss == pytest.approx(plain.final_loss, rel=1e-4)
    rows = bench.markdown_rows(cfg, plain, lightning, {"cpu": "test", "cpu_count": 1})
    assert rows.count("\n") == 2 and "test_bf_dncnn" in rows


def test_train_throughput_sync_counter_tallies_sync_warnings_by_site(monkeypatch):
    bench = _load_script("train_throughput")
    modes = []
    monkeypatch.setattr(bench.torch.cuda, "set_sync_debug_mode", modes.append)
    with bench.SyncCounter(True) as counter:
        warnings.warn("called a synchronizing CUDA operation", stacklevel=1)  # before start(): warm-up, ignored
        counter.start()
        for _ in range(3):
            warnings.warn("called a synchronizing CUDA operation", stacklevel=1)
        warnings.warn("something else", stacklevel=1)
        counter.stop()
    res = counter.result()
    assert res["syncs"] == 3 and list(res["sync_sites"].values()) == [3]
    assert next(iter(res["sync_sites"])).startswith("test_benchmarks.py:")
    assert modes[:2] == ["warn", "default"] and modes[-1] == "default"
    assert bench.SyncCounter(False).result() == {}
    with pytest.raises(SystemExit):
        bench.parse_args(["--sync-debug", "--device", "cpu"])


def test_train_throughput_presets():
    bench = _load_script("train_throughput")
    cfg, _ = bench.parse_args(["--preset", "unet", "--device", "cpu"])
    assert (cfg.arch, cfg.in_chans, cfg.patch, cfg.precision) == ("bf_unet", 3, 64, "32-true")
    cfg, _ = bench.parse_args(["--preset", "dncnn", "--patch", "40", "--device", "cpu"])
    assert (cfg.arch, cfg.in_chans, cfg.patch) == ("bf_dncnn", 1, 40)



def test_energy_throughput_measures_log_prob_and_both_training_steps_on_cpu(tmp_path):
    bench = _load_script("energy_throughput")
    out = tmp_path / "energy.json"
    bench.main(["--arch", "test_energy_unet", "--in-chans", "1", "--size", "16", "--batch", "2", "--steps", "1",
                "--warmup", "1", "--device", "cpu", "--precision", "32-true", "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["shape"] == [2, 1, 16, 16] and res["parameters"] > 0
    for key in ("log_prob_img_per_s", "plain_forward_fp32_img_per_s", "plain_forward_tf32_img_per_s",
                "plain_forward_bf16_img_per_s", "energy_step_img_per_s",
                "denoiser_step_img_per_s"):
        assert res[key] > 0, key
    assert res["energy_over_denoiser"] == pytest.approx(res["energy_step_img_per_s"] / res["denoiser_step_img_per_s"])
    bench.main(["--arch", "test_energy_unet", "--in-chans", "1", "--size", "16", "--batch", "2", "--steps", "1",
                "--warmup", "0", "--device", "cpu", "--skip-training", "--channels-last", "--json", str(out),
                "--overwrite"])
    res = json.loads(out.read_text())
    assert res["channels_last"] and "energy_step_img_per_s" not in res and res["log_prob_img_per_s"] > 0


def test_sampling_throughput_reports_each_batch(tmp_path):
    bench = _load_script("sampling_throughput")
    out = tmp_path / "sampling.json"
    bench.main(["--prior", "bf-dncnn-small-gray", "--size", "16", "--batches", "1", "3", "--max-steps", "4",
                "--device", "cpu", "--json", str(out)])
    res = json.loads(out.read_text())
    assert [r["batch"] for r in res["rows"]] == [1, 3] and res["channels"] == 1
    for r in res["rows"]:
        assert r["steps_max"] == 4 and r["converged"] == 0.0  # capped at 4 steps: none reaches sigma_final
        assert r["samples_per_s"] == pytest.approx(r["batch"] / r["seconds"])
        assert r["sample_steps_per_s"] == pytest.approx(r["batch"] * 4 / r["seconds"])


def test_denoise_quality_reads_a_set_from_another_data_root(tmp_path):
    from PIL import Image

    bench = _load_script("denoise_quality")
    (tmp_path / "set12").mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        ramp = torch.linspace(40, 200, 24)
        img = (ramp[:, None] + 10 * torch.rand(24, 24, generator=g)).clamp(0, 255).byte().numpy()
        Image.fromarray(img).save(tmp_path / "set12" / f"{i:02d}.png")
    d = bench.load_dataset("set12", 1, None, tmp_path)
    assert d is not None and len(d.images) == 2 and tuple(d.images[0].shape[-2:]) == (24, 24)
    with pytest.raises(SystemExit, match="not found"):
        bench.load_dataset("bsd68", 1, None, tmp_path)

def test_finetune_domain_fine_tunes_from_png_folders_and_compares(tmp_path):
    from tests.test_fashion_mnist import tiny_fashion_mnist

    bench = _load_script("finetune_domain")
    root = tiny_fashion_mnist(tmp_path / "idx", n_train=40, n_test=12)
    out = {k: tmp_path / f"r.{k}" for k in ("md", "json", "png")}
    argv = ["--fmnist-root", str(root), "--work", str(tmp_path / "work"), "--train-images", "30", "--heldout-images",
            "4", "--test-images", "3", "--lrs", "1e-3", "--epochs", "1", "--patches", "64", "--sigmas", "25",
            "--no-bm3d", "--threads", "1", "--out", str(out["md"]), "--json", str(out["json"]),
            "--figure", str(out["png"])]
    assert bench.main(argv) == 0
    images = tmp_path / "work" / "images"
    assert [len(list((images / d).glob("*.png"))) for d in ("train", "heldout", "test")] == [30, 4, 3]
    assert {p.stem for p in (images / "heldout").glob("*.png")} == {"00036", "00037", "00038", "00039"}
    res = json.loads(out["json"].read_text())
    methods = ["before fine-tuning", "fine-tuned lr 1e-3", "from scratch lr 1e-3"]
    assert [m["method"] for m in res["means"]] == methods and res["test_images"] == ["00000", "00001", "00002"]
    per_image = res["psnr_per_image"]
    assert all(len(per_image[m]["25"]) == 3 for m in methods)
    assert per_image["before fine-tuning"] != per_image["fine-tuned lr 1e-3"]  # the weights moved
    assert "| 25 |" in out["md"].read_text() and out["png"].read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit, match="--overwrite"):
        bench.main(argv)
    with pytest.raises(SystemExit, match="images exists: give a new --work folder"):
        bench.main([*argv, "--overwrite"])
    with pytest.raises(SystemExit, match="distinct positive learning rates"):  # one label, one run folder each
        bench.main([*argv, "--overwrite", "--lrs", "1e-4", "1.00001e-4"])
    assert bench.lr_text(1.5e-4) == "1.5e-4" and bench.lr_text(3e-4) == "3e-4"


# ---- Gaussian-field energy benchmark -----------------------------------------------------------------
def test_gaussian_benchmark_splits_the_nll_error_into_score_kl_and_normalization():
    """A wrong but normalized Gaussian model: its NLL error is KL(p‖q), which the score-error integral recovers.

    q has the field's spectrum scaled by 1.3 (q_t: 1.3λ + t), so KL(p‖q) = ½Σ(1/s − 1 + ln s)/(d ln 2) in closed
    form; the benchmark's per-level table must give it at the smallest t and its de Bruijn integral of the
    score errors must equal it (both would be off if the integral's t-weighting or grid were wrong).
    """
    from priorlab.core.energy import GaussianEnergy
    from priorlab.core.gaussian_field import GaussianField

    bench = _load_script("gaussian_energy")
    field = GaussianField(8, alpha=2.0, variance=0.01, mean=0.5)
    model = GaussianEnergy(field, offset=3.0, spectrum_scale=1.3)
    model.log_norm_const.fill_(-3.0)  # the exact normalization: the model is a normalized Gaussian
    g = torch.Generator().manual_seed(0)
    x = field.sample(4000, g).double()
    out = bench.energy_error_by_noise_level(model, field, x, g)
    s, d = 1.3, field.num_pixels
    kl = 0.5 * d * (1 / s - 1 + math.log(s)) / (d * math.log(2))
    assert out["levels"][0]["model_minus_exact"] == pytest.approx(kl, rel=0.05)
    assert out["kl_from_scores_bits_per_dim"] == pytest.approx(kl, rel=0.05)
    truth = GaussianEnergy(field)
    truth.log_norm_const.fill_(0.0)
    exact = bench.energy_error_by_noise_level(truth, field, x[:8], g)
    assert exact["kl_from_scores_bits_per_dim"] < 1e-12
    assert max(abs(r["model_minus_exact"]) for r in exact["levels"]) < 1e-9


@pytest.mark.slow
def test_bilinear_demosaic_baseline():
    inverse = _load_script("inverse_problems")
    from priorlab import solvers

    # a colour ramp, linear in x and y: bilinear demosaicing of its Bayer mosaic is exact away from the border
    yy, xx = torch.meshgrid(torch.arange(12.0), torch.arange(14.0), indexing="ij")
    x = torch.stack([0.1 + 0.02 * xx, 0.2 + 0.03 * yy, 0.5 + 0.01 * (xx - yy)])[None].double()
    op = solvers.bayer_demosaic((3, 12, 14))
    out = inverse.baseline("demosaic", op, x)
    torch.testing.assert_close(out[..., 1:-1, 1:-1], x[..., 1:-1, 1:-1])
    assert (out - x).abs().max() < 0.05  # the border is one-sided, not wrong
    # a sparse random mosaic: measured values kept, every entry filled with some measured value of its channel
    op = solvers.random_mosaic((3, 12, 14), generator=torch.Generator().manual_seed(0))
    out = inverse.baseline("demosaic", op, x)
    assert torch.equal(out[0][op.mask], x[0][op.mask])
    for ch in range(3):
        seen = x[0, ch][op.mask[ch]]
        assert out[0, ch].min() >= seen.min() - 1e-12 and out[0, ch].max() <= seen.max() + 1e-12


def _gpu_session_smoke(out, timeout: int, **settings: str) -> str:
    """Run benchmarks/gpu_session.sh in its CPU smoke mode with OUT=out and the given settings; returns its output."""
    import os
    import shutil
    import subprocess

    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    env = {**os.environ, "OUT": str(out), "SMOKE": "1", "PY": sys.executable, "OMP_NUM_THREADS": "1", **settings}
    env.pop("PYTHONPATH", None)
    run = subprocess.run(["bash", str(BENCHMARKS / "gpu_session.sh")], cwd=BENCHMARKS.parent, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


TRAIN_ONLY = {"SKIP_THROUGHPUT": "1", "SKIP_ENERGY": "1", "SKIP_SAMPLING": "1"}  # a training session's settings


def test_gpu_session_script_runs_end_to_end_on_a_cpu(tmp_path):
    """The script a lent GPU runs must not waste its minutes: its CPU smoke mode exercises every step."""
    from priorlab.datamodules.fashion_mnist import DEBIAN_ROOT

    if not DEBIAN_ROOT.is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist (installed by .ci/run)")
    out = tmp_path / "out"
    _gpu_session_smoke(out, 900, TRAIN="dsm", FMNIST=str(DEBIAN_ROOT), DEADLINE="1200")  # every step runs
    files = {p.name for p in out.iterdir()}
    assert {"session.log", "energy_throughput.json", "throughput.json", "sampling_throughput.json",
            "train_metrics.csv", "train_dsm-energy-fashion-mnist.ckpt"} <= files
    assert len(files) <= 8  # what comes back from the GPU machine
    energy = json.loads((out / "energy_throughput.json").read_text())
    assert len(energy) == 4 and all(r["log_prob_img_per_s"] > 0 for r in energy.values())
    rows = json.loads((out / "throughput.json").read_text())
    assert sorted(rows) == sorted(f"throughput_{m}_{c}.json" for m in ("dncnn", "unet")
                                  for c in ("no-compile", "compile", "reduce-overhead"))
    assert rows["throughput_unet_reduce-overhead.json"]["config"]["compile_mode"] == "reduce-overhead"
    from priorlab.zoo import load

    net = load(str(out / "train_dsm-energy-fashion-mnist.ckpt"))  # the slim checkpoint loads as a prior
    assert net.is_calibrated


@pytest.mark.slow
def test_gpu_session_trains_the_s10_pair_within_eight_files(tmp_path, shared_data):
    """TRAIN=s10 trains the bias-free and the biased [0, 10] twins and evaluates both in one JSON, and leaves
    at most the 8 files that come back from the GPU machine even after the measurement steps."""
    data = shared_data
    if not all((data / d).is_dir() for d in ("bsd400", "set12", "bsd68")):
        pytest.skip("needs ../shared/data/{bsd400,set12,bsd68}")
    out = tmp_path / "out"
    _gpu_session_smoke(out, 900, TRAIN="s10", DATA=str(data), DEADLINE="400", **TRAIN_ONLY)
    names = ["bf-dncnn-gray-s10", "dncnn-gray-s10-biased"]
    files = {p.name for p in out.iterdir()}
    assert files == {"session.log", "train_metrics.csv", "quality.json", *(f"train_{n}.ckpt" for n in names)}
    assert len(files) + 3 <= 8  # with the three measurement JSONs of a full session
    quality = json.loads((out / "quality.json").read_text())
    assert {r["method"] for r in quality["records"]} == set(names)
    assert 90.0 in {r["sigma_255"] for r in quality["records"]}  # the paper's out-of-range level
    runs = [line.split(",", 1)[0] for line in (out / "train_metrics.csv").read_text().splitlines()[1:]]
    assert set(runs) == set(names)
    from priorlab.zoo import load

    assert load(str(out / "train_dncnn-gray-s10-biased.ckpt")).arch_config["init_args"]["bias"] is True


def _train_dncnn_in_a_cpu_session(tmp_path, train: str, sets: dict[str, int], color: bool):
    """gpu_session.sh's TRAIN=train CPU smoke over tiny random images in folders {name: count}; returns its OUT."""
    from PIL import Image

    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for folder, n in sets.items():
        (data / folder).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (64, 72, 3) if color else (64, 72), dtype=np.uint8)
            Image.fromarray(pixels).save(data / folder / f"{i:02d}.png")
    out = tmp_path / "out"
    log = _gpu_session_smoke(out, 600, TRAIN=train, DATA=str(data), DEADLINE="400", **TRAIN_ONLY)
    assert "probe of the config's compile settings" in log and "probe failed" not in log
    return out


def test_gpu_session_trains_a_dncnn_after_its_probe_on_a_cpu(tmp_path):
    """TRAIN=bf-dncnn-gray: the probe (a short real fit), the compressed run, its slim checkpoint, BSD68 PSNR."""
    out = _train_dncnn_in_a_cpu_session(tmp_path, "bf-dncnn-gray", {"bsd400": 3, "set12": 2, "bsd68": 2}, False)
    assert {"train_bf-dncnn-gray.ckpt", "quality.json", "train_metrics.csv"} <= {p.name for p in out.iterdir()}
    quality = json.loads((out / "quality.json").read_text())
    assert {r["dataset"] for r in quality["records"]} == {"bsd68"}


def test_gpu_session_trains_the_color_dncnn_on_builtin_photos_and_a_mate_folder(tmp_path):
    """TRAIN=bf-dncnn-color: built-in photos plus $DATA/mate, a color slim checkpoint, PSNR on Set5 and Set14."""
    import torch

    from priorlab.zoo import load

    sets = {"mate": 2, "set5_color": 2, "set14_color": 2}
    out = _train_dncnn_in_a_cpu_session(tmp_path, "bf-dncnn-color", sets, True)
    quality = json.loads((out / "quality.json").read_text())
    assert {r["dataset"] for r in quality["records"]} == {"set5_color", "set14_color"}
    ckpt = out / "train_bf-dncnn-color.ckpt"
    assert load(str(ckpt)).arch_config["init_args"]["in_chans"] == 3
    trained_on = torch.load(ckpt, weights_only=True, map_location="cpu")["datamodule_hyper_parameters"]["train_dirs"]
    assert trained_on == ["builtin:photos", str(tmp_path / "data" / "mate")]  # the mate folder joined the photos
