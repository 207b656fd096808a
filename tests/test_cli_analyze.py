import json
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image

from priorlab.cli import main
from tests.helpers import tiny_data, tiny_module, tiny_trainer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny trained gray bias-free checkpoint."""
    root = tmp_path_factory.mktemp("ckpt_analyze")
    cb = ModelCheckpoint(dirpath=root, save_last=True)
    tiny_trainer(root, callbacks=[cb], limit_val_batches=0).fit(tiny_module(1), datamodule=tiny_data(1))
    return root / "last.ckpt"


def _png(path: Path, channels: int = 1, size=(24, 28)) -> Path:
    yy, xx = np.mgrid[: size[0], : size[1]]
    base = (128 + 60 * np.sin(xx / 4.0) * np.cos(yy / 5.0)).astype(np.uint8)
    arr = base if channels == 1 else np.stack([base, base[::-1], 255 - base], axis=-1)
    Image.fromarray(arr).save(path)
    return path


CASES = {
    "jacobian": (["--crop", "2", "3", "10", "--sigma", "30", "--num_eigen", "4"], ["jacobian.json", "jacobian.png"]),
    "filters": (["--crop", "0", "0", "12", "--sigmas", "10", "50", "--pixels", "6,6", "2,9"],
                ["filters.json", "filters.png", "filters_radius.png"]),
    "basis": (["--crop", "4", "4", "8", "--num_eigen", "3", "--mode", "matrix-free", "--iters", "3"],
              ["basis.json", "basis.png"]),
    "dimensionality": (["--patches", "2", "--patch_size", "8", "--sigmas", "20", "60", "--mode", "matrix-free",
                        "--probes", "8"], ["dimensionality.json", "dimensionality.png"]),
    "noise-generalization": (["--sigmas", "10", "40", "--names", "a", "b", "--published", "bsd68"],
                             ["noise_generalization.json", "noise_generalization.png"]),
}


@pytest.mark.parametrize("sub", list(CASES))
def test_analyze_writes_figures_and_json(tmp_path, ckpt, sub, capsys):
    img = _png(tmp_path / "img.png")
    extra, outputs = CASES[sub]
    priors = ["--prior", str(ckpt)] * (2 if sub == "noise-generalization" else 1)
    args = ["analyze", sub, *priors, "--input", str(img), "--out", str(tmp_path / "out"), *extra]
    assert main(args) == 0
    for name in outputs:
        assert (tmp_path / "out" / name).stat().st_size > 0
    data = json.loads((tmp_path / "out" / outputs[0]).read_text())
    assert data["command"] == f"priorlab analyze {sub}" and data["seed"] == 0
    if sub == "jacobian":
        assert data["mode"] == "exact" and data["N"] == 100 and len(data["singular_values"]) == 100
        assert data["net_bias_relative"] < 1e-4  # bias-free, eval mode
    if sub == "noise-generalization":
        assert data["psnr_mean"]["a"] == data["psnr_mean"]["b"]
        # both tiny priors are bias-free on [0, 100]: the paper's [0, 100] BF-DnCNN curve is drawn beside
        assert data["published"]["a"]["psnr"]["100"] == 23.69 and "[0,100]" in data["published"]["b"]["method"]
    if sub == "dimensionality":
        assert data["mode"] == "matrix-free" and len(data["trace"]["mean"]) == 2
    if sub != "jacobian":
        return
    # never overwrite without --overwrite; with it, the same seed gives the same numbers
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert json.loads((tmp_path / "out" / outputs[0]).read_text()) == data


@pytest.mark.parametrize("case, message", [
    ("channels", "--convert gray"),
    ("crop", "lies outside"),
    ("too_large", "matrix-free"),
    ("missing", "not found"),
    ("two_priors", "one --prior"),
    ("pixel", "outside"),
    ("published", "published curves exist for bsd68"),
    ("num_eigen", "--num_eigen must be >= 1"),
    ("max_images", "--max_images must be >= 1"),
    ("probes", "--probes must be >= 2"),
])
def test_analyze_errors_are_clear(tmp_path, ckpt, capsys, case, message):
    img = _png(tmp_path / "img.png")
    sub, args = "jacobian", ["--input", str(img), "--crop", "0", "0", "8"]
    if case == "channels":
        args[1] = str(_png(tmp_path / "rgb.png", 3))
    elif case == "crop":
        args[3:6] = ["20", "0", "8"]
    elif case == "too_large":
        args += ["--mode", "exact", "--max_exact_mb", "0.01"]
    elif case == "missing":
        args[1] = str(tmp_path / "nope.png")
    elif case == "two_priors":
        args += ["--prior", str(ckpt)]
    elif case == "pixel":
        sub, args = "filters", args + ["--pixels", "8,0"]
    elif case == "published":
        sub, args = "noise-generalization", ["--input", str(img), "--published", "set99"]
    elif case == "num_eigen":
        args += ["--num_eigen", "0"]
    elif case == "max_images":
        sub, args = "noise-generalization", ["--input", str(img), "--max_images", "0"]
    elif case == "probes":
        args += ["--probes", "1"]
    rc = main(["analyze", sub, "--prior", str(ckpt), *args, "--out", str(tmp_path / "out")])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_analyze_convert_gray_accepts_color(tmp_path, ckpt):
    img = _png(tmp_path / "rgb.png", 3)
    assert main(["analyze", "jacobian", "--prior", str(ckpt), "--input", str(img), "--convert", "gray",
                 "--crop", "0", "0", "6", "--out", str(tmp_path / "out")]) == 0
