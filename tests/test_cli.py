import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image

from priorlab.cli import main, read_image
from tests.helpers import tiny_data, tiny_module, tiny_trainer

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny trained checkpoints, gray DnCNN and color UNet."""
    out = {}
    for channels, arch in [(1, "test_bf_dncnn"), (3, "test_bf_unet")]:
        root = tmp_path_factory.mktemp(f"ckpt{channels}")
        cb = ModelCheckpoint(dirpath=root, save_last=True)
        tiny_trainer(root, callbacks=[cb], limit_val_batches=0).fit(
            tiny_module(channels, arch), datamodule=tiny_data(channels))
        out[channels] = root / "last.ckpt"
    return out


def _png(path: Path, channels: int, size=(40, 48)) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: size[0], : size[1]]
    base = (128 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)
    arr = base if channels == 1 else np.stack([base, base[::-1], 255 - base], axis=-1)
    arr = np.clip(arr + rng.integers(-3, 4, arr.shape), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config), "--print_config"])
    assert exc.value.code in (0, None)
    printed = capsys.readouterr().out
    module = "DualScoreModule" if config.name.startswith("dsm_") else "DenoiserModule"
    assert f"class_path: priorlab.lightning_modules.{module}" in printed
    assert "class_path: priorlab.datamodules." in printed


@pytest.mark.parametrize("name", ["finetune_gray.yaml", "finetune_color.yaml"])
def test_finetune_configs_match_their_priors(name):
    """A fine-tuning config builds its network from the bundled prior it names (architecture, weights, noise)."""
    import yaml

    from priorlab import zoo
    from priorlab.lightning_modules import DenoiserModule

    config = yaml.safe_load((REPO / "configs" / name).read_text())
    args = config["model"]["init_args"]
    prior = zoo.load(args["init_from"])
    assert config["data"]["init_args"]["channels"] == prior.prior_config["channels"]
    module = DenoiserModule(**args, in_chans=prior.prior_config["channels"])
    assert args["sigma_schedule"] == prior.prior_config["training"]["sigma_schedule"]
    assert args["sigma_range_255"] == prior.prior_config["sigma_range_255"]
    for (name, a), b in zip(module.net.state_dict().items(), prior.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_next_steps_after_fit_names_the_checkpoints_and_the_command_for_the_model_kind():
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import ModelCheckpoint

    from priorlab import zoo
    from priorlab.cli.lightning import next_steps

    cb = ModelCheckpoint()
    trainer = SimpleNamespace(checkpoint_callbacks=[cb], lightning_module=SimpleNamespace(net=torch.nn.Identity()))
    assert next_steps(trainer) == ""  # nothing written, nothing to say
    cb.last_model_path = "runs/x/last.ckpt"
    assert "priorlab denoise --ckpt runs/x/last.ckpt" in next_steps(trainer)
    trainer.lightning_module.net = energy = zoo.create_model("test_energy_unet", in_chans=1)
    text = next_steps(trainer)
    assert "priorlab logp --prior runs/x/last.ckpt --data folder:IMAGES\n" in text
    assert "priorlab export --ckpt runs/x/last.ckpt" in text
    energy.calibration_shape = (1, 16, 16)  # calibrated: logp must box-downsample a folder to that size
    assert "priorlab logp --prior runs/x/last.ckpt --data folder:IMAGES --resolution 16\n" in next_steps(trainer)


@pytest.mark.slow
def test_console_script_help_and_print_config():
    exe = Path(sys.executable).with_name("priorlab")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "denoise" in out.stdout and "fit" in out.stdout
    out = subprocess.run([str(exe), "fit", "--print_config"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "trainer:" in out.stdout and "CSVLogger" in out.stdout


@pytest.mark.parametrize("channels", [1, 3])
def test_denoise_with_added_noise_prints_metrics(tmp_path, checkpoints, capsys, channels):
    img = _png(tmp_path / "clean.png", channels)
    out, fig = tmp_path / "den.png", tmp_path / "fig.png"
    rc = main(["denoise", "--ckpt", str(checkpoints[channels]), "--input", str(img), "--sigma", "25",
               "--output", str(out), "--figure", str(fig)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "PSNR" in text and "SSIM" in text and "sigma 25/255" in text
    den = read_image(out)
    assert den.shape == read_image(img).shape
    assert fig.read_bytes()[:4] == b"\x89PNG"


def test_denoise_is_reproducible_and_seeded(tmp_path, checkpoints):
    img = _png(tmp_path / "clean.png", 1)
    outs = []
    for name, seed in [("a.png", "1"), ("b.png", "1"), ("c.png", "2")]:
        assert main(["denoise", "--ckpt", str(checkpoints[1]), "--input", str(img), "--sigma", "30",
                     "--seed", seed, "--output", str(tmp_path / name)]) == 0
        outs.append(read_image(tmp_path / name))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_blind_denoise_with_clean_reference(tmp_path, checkpoints, capsys):
    clean = _png(tmp_path / "clean.png", 1)
    noisy_arr = np.asarray(Image.open(clean), dtype=np.float64) + np.random.default_rng(1).normal(0, 20, (40, 48))
    Image.fromarray(np.clip(noisy_arr, 0, 255).astype(np.uint8)).save(tmp_path / "noisy.png")
    rc = main(["denoise", "--ckpt", str(checkpoints[1]), "--input", str(tmp_path / "noisy.png"),
               "--clean", str(clean)])
    assert rc == 0
    assert (tmp_path / "noisy_denoised.png").is_file()
    assert "given noisy input: PSNR" in capsys.readouterr().out


def test_denoise_convert_gray(tmp_path, checkpoints):
    img = _png(tmp_path / "rgb.png", 3)
    assert main(["denoise", "--ckpt", str(checkpoints[1]), "--input", str(img), "--convert", "gray",
                 "--output", str(tmp_path / "o.png")]) == 0
    assert read_image(tmp_path / "o.png").shape[0] == 1


@pytest.mark.parametrize("case,message", [
    ("missing", "not found"),
    ("corrupt", "cannot read"),
    ("channels", "channel"),
    ("small", "minimum size"),
    ("exists", "exists"),
    ("folder", "is a folder"),
    ("float_tiff", "32-bit float"),
    ("same_outputs", "must be different files"),
    ("figure_bmp", "name it .png"),
    ("same", "over the input"),
    ("badckpt", "not a priorlab checkpoint"),
    ("sigma", "0-255"),
])
def test_denoise_errors_are_clear_and_harmless(tmp_path, checkpoints, capsys, case, message):
    gray = _png(tmp_path / "gray.png", 1)
    ckpt = str(checkpoints[1])
    args = ["--input", str(gray), "--output", str(tmp_path / "out.png")]
    if case == "missing":
        args[1] = str(tmp_path / "nope.png")
    elif case == "corrupt":
        (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
        args[1] = str(tmp_path / "bad.png")
    elif case == "channels":
        args[1] = str(_png(tmp_path / "rgb.png", 3))
    elif case == "small":
        ckpt = str(checkpoints[3])
        args[1] = str(_png(tmp_path / "tiny.png", 3, size=(2, 9)))
    elif case == "exists":
        (tmp_path / "out.png").write_bytes(b"precious")
    elif case == "float_tiff":
        Image.fromarray(np.full((16, 16), np.nan, dtype=np.float32), mode="F").save(tmp_path / "f.tif")
        args[1] = str(tmp_path / "f.tif")
    elif case == "same_outputs":
        args += ["--figure", str(tmp_path / "out.png")]
    elif case == "figure_bmp":  # the figure is PNG data: a .bmp name would lie
        args += ["--figure", str(tmp_path / "fig.bmp")]
    elif case == "folder":
        (tmp_path / "outdir").mkdir()
        args[3] = str(tmp_path / "outdir")
        args.append("--overwrite")
    elif case == "same":
        args[3] = str(gray)
    elif case == "badckpt":
        torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
        ckpt = str(tmp_path / "foreign.ckpt")
    elif case == "sigma":
        args += ["--sigma", "300"]
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    rc = main(["denoise", "--ckpt", ckpt, *args])
    assert rc == 2
    assert message in capsys.readouterr().err
    for p, data in before.items():
        assert p.read_bytes() == data, f"{p} was modified"
    if case != "exists":
        assert not (tmp_path / "out.png").exists()


def test_denoise_and_solve_score_images_smaller_than_the_ssim_window(tmp_path, checkpoints, capsys):
    """SSIM's 11-pixel window does not fit an 8x8 image: PSNR only, no traceback."""
    import json

    tiny = _png(tmp_path / "tiny.png", 1, size=(8, 8))
    assert main(["denoise", "--ckpt", str(checkpoints[1]), "--input", str(tiny), "--sigma", "25",
                 "--output", str(tmp_path / "o.png")]) == 0
    assert "SSIM n/a -> n/a" in capsys.readouterr().out
    assert main(["solve", "--prior", str(checkpoints[1]), "--task", "pixels", "--fraction", "0.5", "--input",
                 str(tiny), "--samples", "1", "--max_steps", "3", "--out", str(tmp_path / "s")]) == 0
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())["metrics"]
    assert all(m["ssim"] is None and m["psnr"] > 0 for m in metrics)


def test_read_image_handles_16_bit_and_palette(tmp_path):
    arr16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    Image.fromarray(arr16).save(tmp_path / "g16.png")
    t = read_image(tmp_path / "g16.png")
    assert t.shape == (1, 64, 64) and 0 <= t.min() and t.max() <= 1
    assert t.max() > 0.9
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (3, 8, 8)


def test_denoise_with_an_energy_prior_passes_sigma_and_without_sigma_says_so(tmp_path, capsys):
    """An energy model's denoiser depends on σ: `--sigma` must reach it (it used to be called as net(y))."""
    img = _png(tmp_path / "clean.png", 1, size=(28, 28))
    out = tmp_path / "den.png"
    rc = main(["denoise", "--prior", "dsm-energy-small-fashion-mnist", "--input", str(img), "--sigma", "25",
               "--output", str(out)])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    psnr_in, psnr_out = (float(v) for v in text.split("PSNR ")[1].split(" dB")[0].split(" -> "))
    assert psnr_out > psnr_in  # denoised at the level that was added
    assert read_image(out).shape == (1, 28, 28)
    rc = main(["denoise", "--prior", "dsm-energy-small-fashion-mnist", "--input", str(img),
               "--output", str(tmp_path / "blind.png")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "is an energy model" in err and "pass --sigma" in err
    assert not (tmp_path / "blind.png").exists()
