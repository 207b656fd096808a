"""End-to-end runs of the LightningCLI on tiny settings, and image logging to TensorBoard / wandb."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from priorlab.cli import main
from priorlab.lightning_modules import DenoiseFigure
from priorlab.zoo import load_checkpoint
from tests.helpers import tiny_data, tiny_module, tiny_trainer

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model.init_args.arch", "test_bf_dncnn", "--data.init_args.patches_per_epoch", "16",
        "--data.init_args.batch_size", "8", "--data.init_args.patch_size", "16", "--data.init_args.val_max_size", "32",
        "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1"]


@pytest.mark.slow
def test_quickstart_config_fits_and_tests_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(REPO / "configs/quickstart.yaml"), *TINY, "--trainer.max_epochs", "2",
          "--trainer.limit_val_batches", "2"])
    run = tmp_path / "runs" / "quickstart" / "version_0"
    assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file()
    figure = run / "figures" / "denoised_sigma25.png"
    assert figure.read_bytes()[:4] == b"\x89PNG"
    last = run / "checkpoints" / "last.ckpt"
    net = load_checkpoint(last)
    assert net.arch_config["architecture"] == "test_bf_dncnn"
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/psnr", "val/psnr_25"} <= set(header)
    out = capsys.readouterr().out  # the end of fit says where the checkpoints are and how to use them
    assert "priorlab: last checkpoint runs/quickstart/version_0/checkpoints/last.ckpt" in out
    assert "priorlab: best checkpoint runs/quickstart/version_0/checkpoints/best-epoch=" in out
    assert "use it:     priorlab denoise --ckpt runs/quickstart/version_0/checkpoints/last.ckpt" in out
    main(["test", "--config", str(REPO / "configs/quickstart.yaml"), *TINY, "--trainer.limit_test_batches", "2",
          "--ckpt_path", str(last)])
    assert "test/psnr_25" in capsys.readouterr().out


@pytest.mark.parametrize("init_from, message", [
    ("bf-dncnn-smal-gray", "Did you mean 'bf-dncnn-small-gray'"),
    ("missing.ckpt", "checkpoint not found"),
    ("bf-unet-small-gray", "but this module builds"),
])
def test_fit_with_a_bad_init_from_is_one_line(tmp_path, monkeypatch, capsys, init_from, message):
    """jsonargparse wraps the constructor's error in a long traceback; the CLI prints the user error alone."""
    monkeypatch.chdir(tmp_path)
    rc = main(["fit", "--config", str(REPO / "configs/quickstart.yaml"), *TINY, "--trainer.fast_dev_run", "true",
               "--model.init_args.init_from", init_from])
    err = capsys.readouterr().err
    assert rc == 2 and "priorlab fit: error: " in err and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("extra, message", [
    (["--model.init_args.sigma_schedule", "log_uniform"], "log_uniform needs a noise range above 0"),
    (["--trainer.strategy", '{"class_path": "lightning.pytorch.strategies.DDPStrategy", '
      '"init_args": {"static_graph": true}}'], "static_graph=True) is not supported"),
])
def test_fit_with_settings_that_cannot_work_is_one_line(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    rc = main(["fit", "--config", str(REPO / "configs/quickstart.yaml"), *TINY, "--trainer.fast_dev_run", "true",
               *extra])
    err = capsys.readouterr().err
    assert rc == 2 and "priorlab fit: error: " in err and message in err and "Traceback" not in err


@pytest.mark.parametrize("files, message", [
    ({"a.png": "small"}, "no source image is at least 16x16 pixels"),
    ({"a.png": "small", "b.png": "garbage"}, "cannot read image file"),
])
def test_fit_with_bad_training_images_is_one_line(tmp_path, monkeypatch, capsys, files, message):
    """Errors from the datamodule's setup (inside Trainer.fit) are reported as one line too, and nothing is lost."""
    from PIL import Image

    folder = tmp_path / "mine"
    folder.mkdir()
    for name, kind in files.items():
        if kind == "small":
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / name)
        else:
            (folder / name).write_bytes(b"not an image")
    before = {p: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.chdir(tmp_path)
    rc = main(["fit", "--config", str(REPO / "configs/quickstart.yaml"), *TINY, "--trainer.max_epochs", "1",
               f"--data.init_args.train_dirs=[{folder}]"])
    err = capsys.readouterr().err
    assert rc == 2 and "priorlab fit: error: " in err and message in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in folder.iterdir()} == before


def test_errors_of_the_training_code_keep_their_traceback(tmp_path, monkeypatch):
    """Only input handling (data, priors, files) is reported as one line: an error raised by priorlab's training
    code may be a bug, and PRIORLAB_TRACEBACK=1 shows the traceback of a user error too."""
    from priorlab.core import add_noise
    from priorlab.lightning_modules import DenoiserModule

    def broken(self, batch, batch_idx):  # a bug: the ValueError is raised inside priorlab (core), not by input code
        return add_noise(batch, -1.0)

    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(REPO / "configs/quickstart.yaml"), *TINY, "--trainer.max_epochs", "1"]
    with monkeypatch.context() as m:
        m.setattr(DenoiserModule, "training_step", broken)
        with pytest.raises(ValueError, match="sigma must be a finite noise level"):
            main(args)
    monkeypatch.setenv("PRIORLAB_TRACEBACK", "1")
    with pytest.raises(ValueError, match="Did you mean"):
        main([*args, "--model.init_args.init_from", "bf-dncnn-smal-gray"])


@pytest.mark.parametrize("text, flag, message", [
    ("", "--config", "is empty: a config is a YAML mapping"),  # was jsonargparse's "Unexpected config: "
    ("- trainer\n- model\n", "--config=", "holds a YAML list, not a mapping"),
    ("", "-c=", "is empty"),
])
def test_fit_with_an_empty_or_non_mapping_config_is_one_line(tmp_path, capsys, text, flag, message):
    config = tmp_path / "my.yaml"
    config.write_text(text)
    args = [f"{flag}{config}"] if flag.endswith("=") else [flag, str(config)]
    assert main(["fit", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("priorlab fit: error: config file ") and message in err
    assert config.read_text() == text


@pytest.mark.slow
def test_import_priorlab_is_light():
    code = "import sys, priorlab; print(sorted(m for m in ('lightning', 'timm', 'datasets', 'wandb', " \
           "'huggingface_hub', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_figures_reach_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb")
    tiny_trainer(tmp_path, logger=logger, callbacks=[DenoiseFigure(max_images=2, crop=32)]).fit(
        tiny_module(), datamodule=tiny_data())
    acc = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    acc.Reload()
    assert "denoised_sigma25" in acc.Tags()["images"]
    assert any(t.startswith("val/psnr") for t in acc.Tags()["scalars"])


@pytest.mark.slow
def test_figures_reach_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = WandbLogger(project="priorlab-test", save_dir=str(tmp_path), offline=True)
    tiny_trainer(tmp_path, logger=logger, callbacks=[DenoiseFigure(max_images=2, crop=32)]).fit(
        tiny_module(), datamodule=tiny_data())
    import wandb

    wandb.finish()
    media = list(tmp_path.rglob("media/images/*.png"))
    assert media, f"no wandb media under {tmp_path}"
    assert torch.tensor(len(media)) >= 1


def test_fast_dev_run_leaves_no_checkpoint_behind(tmp_path, monkeypatch, capsys):
    """Lightning's ModelCheckpoint(save_last=True) writes ./checkpoints/last.ckpt at the end of a fast_dev_run."""
    monkeypatch.chdir(tmp_path)
    rc = main(["fit", "--config", str(REPO / "configs/quickstart.yaml"), *TINY, "--trainer.fast_dev_run", "2"])
    assert rc in (0, None)
    assert not list(tmp_path.rglob("*.ckpt")) and not (tmp_path / "checkpoints").exists()
    assert "priorlab: last checkpoint" not in capsys.readouterr().out


@pytest.mark.slow
def test_wandb_runs_chosen_in_yaml_keep_their_files_apart(tmp_path, monkeypatch):
    """wandb's log_dir is its shared save_dir: each run's config, figures and checkpoints go to its own folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    overlay = tmp_path / "wandb.yaml"
    overlay.write_text("trainer:\n  logger:\n    class_path: lightning.pytorch.loggers.WandbLogger\n"
                       "    init_args: {save_dir: runs_wb, project: priorlab-test}\n")
    import wandb

    for _ in range(2):
        rc = main(["fit", "--config", str(REPO / "configs/quickstart.yaml"), "--config", str(overlay), *TINY,
                   "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1"])
        assert rc in (0, None)
        wandb.finish()
    configs = sorted((tmp_path / "runs_wb").rglob("config.yaml"))
    assert len(configs) == 2 and not (tmp_path / "runs_wb" / "config.yaml").exists()
    for config in configs:
        run = config.parent
        assert (run / "figures" / "denoised_sigma25.png").is_file()
        assert (run / "checkpoints" / "last.ckpt").is_file()


def test_predict_writes_each_denoised_image_whole_and_named_after_its_file(tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    config = str(REPO / "configs/quickstart.yaml")
    main(["fit", "--config", config, *TINY, "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1"])
    last = tmp_path / "runs" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    folder = tmp_path / "noisy"
    folder.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a.png": (40, 36), "b.png": (20, 28)}  # a is larger than the config's val_max_size (32): kept whole
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(folder / name)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    main(["predict", "--config", config, *TINY, "--data.init_args.test_dirs", f"[{folder}]", "--ckpt_path", str(last)])
    preds = sorted((tmp_path / "runs" / "quickstart").rglob("predictions/*.png"))
    assert [p.name for p in preds] == ["a.png", "b.png"]
    assert "2 predicted image(s) written to" in capsys.readouterr().out
    net = load_checkpoint(last)
    for p in preds:
        y = torch.from_numpy(np.asarray(Image.open(folder / p.name), dtype=np.float32) / 255.0)[None, None]
        expected = net(y).clamp(0, 1)[0, 0].detach().numpy() * 255
        got = np.asarray(Image.open(p), dtype=np.float32)
        assert got.shape == sizes[p.name] and np.abs(got - expected).max() <= 0.51
    assert before == {p.name: p.read_bytes() for p in folder.iterdir()}  # inputs untouched


def test_predict_refuses_to_replace_a_runs_files_with_a_one_line_error(tmp_path, monkeypatch, capsys):
    """A second predict into the same run folder or output_dir stops before writing (exit 2, one line)."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    config = str(REPO / "configs/quickstart.yaml")
    main(["fit", "--config", config, *TINY, "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1"])
    last = str(tmp_path / "runs" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt")
    folder = tmp_path / "noisy"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24), dtype=np.uint8)).save(folder / "a.png")
    predict = ["predict", "--config", config, *TINY, "--data.init_args.test_dirs", f"[{folder}]", "--ckpt_path", last]
    assert main(predict) == 0
    written = tmp_path / "runs" / "quickstart" / "version_1" / "predictions" / "a.png"
    before = written.read_bytes()
    capsys.readouterr()
    # the same run folder again: its config.yaml is another run's
    assert main([*predict, "--trainer.logger.init_args.version", "1"]) == 2
    assert "version_1/config.yaml exists" in capsys.readouterr().err
    # a new run folder, but an output_dir holding a.png already
    writer = ["--trainer.callbacks+=priorlab.lightning_modules.PredictionWriter",
              f"--trainer.callbacks.init_args.output_dir={written.parent}"]
    assert main([*predict, *writer]) == 2
    assert f"{written} exists" in capsys.readouterr().err
    assert written.read_bytes() == before
