"""``priorlab sample`` and ``priorlab solve`` end to end with tiny trained checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image

from priorlab.cli import main, read_image
from tests.helpers import tiny_data, tiny_module, tiny_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Tiny trained checkpoints: gray and colour BF-DnCNN."""
    out = {}
    for channels in (1, 3):
        root = tmp_path_factory.mktemp(f"ckpt{channels}")
        cb = ModelCheckpoint(dirpath=root, save_last=True)
        tiny_trainer(root, callbacks=[cb], limit_val_batches=0).fit(
            tiny_module(channels, "test_bf_dncnn"), datamodule=tiny_data(channels))
        out[channels] = root / "last.ckpt"
    return out


def _png(path: Path, channels: int, size=(20, 24)) -> Path:
    yy, xx = np.mgrid[: size[0], : size[1]]
    base = (128 + 60 * np.sin(xx / 4.0) * np.cos(yy / 5.0)).astype(np.uint8)
    arr = base if channels == 1 else np.stack([base, base[::-1], 255 - base], axis=-1)
    Image.fromarray(arr).save(path)
    return path


FAST = ["--sigma_final", "0.2", "--h0", "0.2", "--max_steps", "30"]


def test_sample_writes_grid_plot_and_json(tmp_path, ckpts, capsys):
    out = tmp_path / "s.png"
    args = ["sample", "--prior", str(ckpts[1]), "--num", "3", "--size", "12", "--seed", "1", "--out", str(out), *FAST]
    assert main(args) == 0
    assert "converged" in capsys.readouterr().out
    meta = json.loads((tmp_path / "s.json").read_text())
    assert len(meta["steps"]) == 3 and all(1 <= s <= 30 for s in meta["steps"])
    assert meta["params"]["beta"] == 0.5 and meta["params"]["init_mean"] == 0.5
    assert (tmp_path / "s_convergence.png").read_bytes()[:4] == b"\x89PNG"
    grid = read_image(out)
    assert grid.shape[0] == 1 and grid.shape[1] >= 2 * 12
    first = out.read_bytes()
    # never overwrite silently; with --overwrite the same seed gives the same grid
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert out.read_bytes() == first


@pytest.mark.parametrize("task", ["inpaint", "pixels", "sr", "deblur", "cs"])
def test_solve_gray_tasks(tmp_path, ckpts, capsys, task):
    img = _png(tmp_path / "in.png", 1)
    out = tmp_path / "out"
    extra = ["--factor", "2"] if task == "sr" else []
    rc = main(["solve", "--prior", str(ckpts[1]), "--task", task, "--input", str(img), "--out", str(out),
               "--samples", "2", "--crop", "16", *extra, *FAST])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "PSNR" in text and "mean of 2" in text
    for name in ["original", "measurement", "sample_0", "sample_1", "mean", "std", "figure"]:
        assert (out / f"{name}.png").is_file()
    assert read_image(out / "mean.png").shape == (1, 16, 16)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == task and len(metrics["steps"]) == 2
    assert {m["name"] for m in metrics["metrics"]} >= {"sample 0", "mean of 2"}


def test_solve_inpaint_box_given_as_four_numbers(tmp_path, ckpts):
    img = _png(tmp_path / "in.png", 1)
    out = tmp_path / "out"
    assert main(["solve", "--prior", str(ckpts[1]), "--task", "inpaint", "--box", "2", "3", "4", "5", "--input",
                 str(img), "--out", str(out), "--samples", "1", "--crop", "16", *FAST]) == 0
    measured, original = read_image(out / "measurement.png")[0], read_image(out / "original.png")[0]
    hole = np.zeros((16, 16), dtype=bool)
    hole[2:6, 3:8] = True
    assert (measured[hole] == 0).all() and (measured[~hole] == original[~hole]).all()
    assert (original[hole] > 0).any()


def test_solve_gaussian_deblur_starts_from_the_blurred_image(tmp_path, ckpts):
    img = _png(tmp_path / "in.png", 1)
    out = tmp_path / "out"
    assert main(["solve", "--prior", str(ckpts[1]), "--task", "deblur", "--blur_sigma", "1.5", "--input", str(img),
                 "--out", str(out), "--samples", "1", "--crop", "16", *FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"][0]["name"] == "blurred input" and "GaussianDeblur" in metrics["operator"]
    original, blurred = read_image(out / "original.png"), read_image(out / "measurement.png")
    assert (blurred - original).abs().max() > 0.05  # measurement.png shows the blurred observation
    assert abs(float(blurred.mean() - original.mean())) < 2 / 255  # a blur keeps the mean


def test_solve_demosaic_color(tmp_path, ckpts):
    img = _png(tmp_path / "in.png", 3)
    out = tmp_path / "out"
    assert main(["solve", "--prior", str(ckpts[3]), "--task", "demosaic", "--mosaic", "cones", "--input", str(img),
                 "--out", str(out), "--samples", "1", *FAST]) == 0
    assert read_image(out / "sample_0.png").shape == (3, 20, 24)


@pytest.mark.parametrize(("extra", "message"), [
    (["--task", "sr", "--factor", "3"], "must divide"),
    (["--task", "sr", "--factor", "0"], "integer >= 2"),  # not the default factor 4
    (["--task", "pixels", "--fraction", "1.5"], "(0, 1)"),
    (["--task", "sr", "--fraction", "0.5"], "--fraction applies"),
    (["--task", "demosaic"], "colour"),
    (["--task", "inpaint", "--crop", "100"], "--crop"),
    (["--task", "inpaint", "--box", "1", "2", "3"], "--box"),
    (["--task", "sr", "--factor", "2", "--blur_sigma", "1.0"], "--blur_sigma applies"),
    (["--task", "deblur", "--blur_sigma", "1.0", "--fraction", "0.2"], "not both"),
    (["--task", "deblur", "--blur_sigma", "0"], "blur_sigma must be > 0"),
    (["--task", "sr", "--box", "1", "2", "3", "4"], "--box applies to the inpaint task"),
    (["--task", "inpaint", "--factor", "2"], "--factor applies to the sr task"),
    (["--task", "pixels", "--mosaic", "cones"], "--mosaic applies to the demosaic task"),
])
def test_solve_errors(tmp_path, ckpts, capsys, extra, message):
    img = _png(tmp_path / "in.png", 1)
    try:
        rc = main(["solve", "--prior", str(ckpts[1]), "--input", str(img), "--out", str(tmp_path / "o"), *extra])
    except SystemExit as exc:  # argparse's own errors (wrong number of values) exit with its usage message
        rc = exc.code
    assert rc == 2
    assert message in capsys.readouterr().err


def test_solve_channel_mismatch_and_existing_outputs(tmp_path, ckpts, capsys):
    img = _png(tmp_path / "rgb.png", 3, size=(16, 16))
    base = ["solve", "--prior", str(ckpts[1]), "--task", "inpaint", "--input", str(img), "--out", str(tmp_path / "o"),
            "--samples", "1", *FAST]
    assert main(base) == 2
    assert "--convert gray" in capsys.readouterr().err
    assert main(base + ["--convert", "gray"]) == 0
    assert main(base + ["--convert", "gray"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # more samples before: --overwrite with fewer would leave sample_1.png beside a metrics.json of one sample
    more = [a if a != "1" else "2" for a in base]
    assert main(more + ["--convert", "gray", "--overwrite"]) == 0
    before = (tmp_path / "o" / "metrics.json").read_bytes()
    assert main(base + ["--convert", "gray", "--overwrite"]) == 2
    assert "sample_1.png from an earlier run" in capsys.readouterr().err
    assert (tmp_path / "o" / "metrics.json").read_bytes() == before


def test_sample_rejects_bad_settings(tmp_path, ckpts, capsys):
    assert main(["sample", "--prior", str(ckpts[1]), "--beta", "0", "--out", str(tmp_path / "s.png")]) == 2
    assert "beta" in capsys.readouterr().err
    assert main(["sample", "--prior", str(ckpts[1]), "--nrow", "-3", "--out", str(tmp_path / "s.png")]) == 2
    assert "--nrow must be >= 1" in capsys.readouterr().err
    assert main(["sample", "--prior", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "s.png")]) == 2


def test_progress_bar_redraws_rarely_when_stderr_is_a_log_file(capsys):
    """A run logged to a file gets a few progress lines, not one (or several) per step."""
    from types import SimpleNamespace

    import torch

    from priorlab.cli.sample import ProgressBar

    bar = ProgressBar(500, "sample")
    for i in range(500):
        bar(SimpleNamespace(active=torch.tensor([True, i < 250]), sigma=torch.tensor([0.5, float("nan")])))
    bar.close()
    err = capsys.readouterr().err
    redraws = err.count("\r") + err.count("\n")
    assert "500/500" in err and "running=" in err
    assert redraws < 10, f"{redraws} redraws for 500 steps"
