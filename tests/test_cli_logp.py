"""``priorlab logp`` end to end on tiny checkpoints and tiny data files (called through ``run``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from priorlab.cli.logp import run
from priorlab.zoo.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_KEY
from priorlab.zoo.registry import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _save(net: torch.nn.Module, path, **meta) -> str:
    info = {"format_version": CHECKPOINT_FORMAT, "arch_config": net.arch_config, "state_prefix": "net.",
            "image_range": [0.0, 1.0], **meta}
    torch.save({CHECKPOINT_KEY: info, "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, path)
    return str(path)


@pytest.fixture(scope="module")
def priors(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("priors")
    torch.manual_seed(0)
    out = {"denoiser": _save(create_model("test_bf_dncnn", in_chans=1), root / "dncnn.ckpt", kind="denoiser",
                             channels=1, sigma_range_255=[0.0, 100.0], blind=True)}
    try:
        energy = create_model("test_energy_unet", in_chans=1)
    except KeyError:
        return out  # part A's energy architecture not registered in this install
    energy.calibrate(torch.rand(16, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    out["energy"] = _save(energy, root / "energy.ckpt", kind="energy", channels=1, log10_t_range=[-4.0, 1.0])
    uncal = create_model("test_energy_unet", in_chans=1)
    out["uncalibrated"] = _save(uncal, root / "uncal.ckpt", kind="energy", channels=1, log10_t_range=[-4.0, 1.0])
    return out


@pytest.fixture(scope="module")
def npz_data(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("in8")
    rows = np.random.default_rng(0).integers(0, 256, (6, 3 * 8 * 8), dtype=np.uint8)
    np.savez(root / "val_data.npz", data=rows)
    return f"npz:{root}"


def _energy(priors):
    if "energy" not in priors:
        pytest.skip("energy architecture (part A) not available")
    return priors["energy"]


def test_energy_estimator_writes_json_and_histogram(tmp_path, priors, npz_data, capsys):
    out = tmp_path / "res"
    assert run(["--prior", _energy(priors), "--data", npz_data, "--limit", "5", "--batch-size", "2",
                "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "bits/dim over 5 images" in text and "images/s" in text
    rec = json.loads((out / "logp.json").read_text())
    e = rec["estimators"]["energy"]
    assert len(e["bits_per_dim"]) == 5 and e["nfe_per_image"] == 1
    assert "imagenet8-new" in rec["data"]["version"] and "gray" in rec["data"]["version"]
    assert rec["dequantization"] == "none" and e["settings"]["precision"]["cudnn_allow_tf32"] is False
    assert rec["prior_config"]["kind"] == "energy"
    assert rec["prior_weights"]["sha256"] == hashlib.sha256(Path(_energy(priors)).read_bytes()).hexdigest()
    bpd = np.array(e["bits_per_dim"])
    assert np.allclose(bpd, -np.array(e["log_prob_nats"]) / (64 * np.log(2)) + 8, atol=1e-5)
    assert e["mean_bits_per_dim"] == pytest.approx(bpd.mean(), abs=1e-5)
    assert (out / "logp_hist.png").stat().st_size > 1000


def test_both_estimators_same_images_and_ratio(tmp_path, priors, npz_data, capsys):
    out = tmp_path / "both"
    assert run(["--prior", _energy(priors), "--data", npz_data, "--limit", "2", "--estimator", "both",
                "--rtol", "1e-3", "--atol", "1e-3", "--dequantization", "uniform", "--out", str(out)]) == 0
    assert "time ratio ODE / energy" in capsys.readouterr().out
    rec = json.loads((out / "logp.json").read_text())
    ode, energy = rec["estimators"]["ode"], rec["estimators"]["energy"]
    assert ode["nfe_per_image"] > 1 and rec["time_ratio_ode_over_energy"] > 1
    assert ode["settings"]["model_through"].startswith("energy") and ode["settings"]["rtol"] == 1e-3
    assert ode["settings"]["sigma_max"] == pytest.approx(10 ** 0.5)  # from the model's log10 t range
    assert len(ode["bits_per_dim"]) == len(energy["bits_per_dim"]) == 2
    assert rec["dequantization"] == "uniform"


def test_ode_on_a_blind_denoiser_and_image_folder(tmp_path, priors, capsys):
    rng = np.random.default_rng(1)
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(tmp_path / f"{k}.png")
    out = tmp_path / "ode"
    assert run(["--prior", priors["denoiser"], "--data", f"folder:{tmp_path}", "--estimator", "ode",
                "--divergence", "exact", "--rtol", "1e-3", "--atol", "1e-3", "--out", str(out)]) == 0
    rec = json.loads((out / "logp.json").read_text())
    ode = rec["estimators"]["ode"]
    assert ode["settings"]["divergence"] == "exact" and ode["settings"]["model_through"] == "denoiser"
    assert ode["settings"]["sigma_max"] == pytest.approx(100 / 255)
    assert "native size" in rec["data"]["version"] and np.isfinite(ode["mean_bits_per_dim"])


def test_refuses_to_overwrite(tmp_path, priors, npz_data, capsys):
    out = tmp_path / "o"
    args = ["--prior", _energy(priors), "--data", npz_data, "--limit", "1", "--out", str(out)]
    assert run(args) == 0
    before = (out / "logp.json").read_text()
    # One image has no standard error: reported as such, and null (valid JSON) in the record.
    assert "(1 image, no standard error)" in capsys.readouterr().out
    assert json.loads(before)["estimators"]["energy"]["stderr_bits_per_dim"] is None
    with pytest.raises(FileExistsError, match="--overwrite"):
        run(args)
    assert (out / "logp.json").read_text() == before
    assert run(args + ["--overwrite", "--seed", "1"]) == 0


@pytest.mark.parametrize("case, error, message", [
    ("unknown_data", ValueError, "unknown data 'imagenet65'"),
    ("denoiser_energy", ValueError, "--estimator ode"),
    ("missing_ckpt", FileNotFoundError, "checkpoint not found"),
    ("missing_data", FileNotFoundError, "not found"),
    ("uncalibrated", ValueError, "never calibrated"),
    ("wrong_size", ValueError, r"log-probabilities of 1x8x8 images .* has 1x6x6 images"),
    ("other_size", ValueError, r"log-probabilities of 1x8x8 images .* has 1x12x12 images.*--resolution 8"),
    ("bad_batch", ValueError, "--batch_size must be >= 1"),
    ("no_images", ValueError, "holds no images"),
    ("bad_tolerance", ValueError, "tolerances must be > 0"),
    ("fixed_size_resolution", ValueError, "applies to folder: and hf: data"),
    ("upsampling_resolution", ValueError, "box resizing only downsamples"),
])
def test_errors_are_clear(tmp_path, priors, npz_data, case, error, message):
    prior, data, extra = priors["denoiser"], npz_data, []
    if case == "unknown_data":
        data, extra = "imagenet65", ["--estimator", "ode"]
    elif case == "missing_ckpt":
        prior = str(tmp_path / "nope.ckpt")
    elif case == "missing_data":
        data, extra = f"npz:{tmp_path / 'nothing'}", ["--estimator", "ode"]
    elif case in ("uncalibrated", "wrong_size", "other_size"):
        prior = priors.get(case if case == "uncalibrated" else "energy") or pytest.skip("no energy architecture")
        if case in ("wrong_size", "other_size"):  # 12x12 fits the network (multiple of 4), not its constant C
            size = 6 if case == "wrong_size" else 12
            Image.fromarray(np.zeros((size, size), dtype=np.uint8)).save(tmp_path / "a.png")
            data = f"folder:{tmp_path}"
    elif case == "bad_batch":
        extra = ["--batch-size", "0"]
    elif case == "no_images":
        (tmp_path / "empty").mkdir()
        np.savez(tmp_path / "empty" / "val_data.npz", data=np.zeros((0, 3 * 8 * 8), dtype=np.uint8))
        data, extra = f"npz:{tmp_path / 'empty'}", ["--estimator", "ode"]
    elif case == "bad_tolerance":
        extra = ["--estimator", "ode", "--rtol", "-1"]
    elif case == "fixed_size_resolution":
        extra = ["--estimator", "ode", "--resolution", "4"]
    elif case == "upsampling_resolution":
        (tmp_path / "small").mkdir()
        Image.fromarray(np.zeros((6, 6), dtype=np.uint8)).save(tmp_path / "small" / "a.png")
        data, extra = f"folder:{tmp_path / 'small'}", ["--estimator", "ode", "--resolution", "12"]
    with pytest.raises(error, match=message):
        run(["--prior", prior, "--data", data, "--out", str(tmp_path / "out"), *extra])
    assert not (tmp_path / "out" / "logp.json").exists()


def test_a_bundled_energy_prior_refuses_images_of_another_size(tmp_path):
    """32x32 images under the 28x28 Fashion-MNIST prior used to print ~91 bits/dim: C holds for d = 784 only."""
    rng = np.random.default_rng(2)
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(tmp_path / f"{k}.png")
    args = ["--prior", "dsm-energy-small-fashion-mnist", "--data", f"folder:{tmp_path}", "--out", str(tmp_path / "o")]
    with pytest.raises(ValueError, match=r"1x28x28 images .* has 1x32x32 images.*--resolution 28"):
        run(args)
    assert not (tmp_path / "o" / "logp.json").exists()
    assert run(args + ["--resolution", "28"]) == 0  # what the message says to do
