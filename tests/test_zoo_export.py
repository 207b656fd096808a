"""Published prior folders: export, strict safetensors loading, model cards, catalog, timm, CLI (no server)."""

import json
from pathlib import Path

import pytest
import timm
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file, save_file

from priorlab import zoo
from priorlab.cli import main
from priorlab.zoo.artifact import FORMAT_VERSION, load_folder
from priorlab.zoo.catalog import PriorEntry
from tests.helpers import tiny_data, tiny_module, tiny_trainer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    cb = ModelCheckpoint(dirpath=root, save_last=True)
    tiny_trainer(root, callbacks=[cb], limit_val_batches=0).fit(tiny_module(1), datamodule=tiny_data(1))
    return root / "last.ckpt"


@pytest.fixture(scope="module")
def folder(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny-prior"
    metrics = [{"dataset": "set12", "split": "test", "sigma_255": 25.0, "psnr": 27.5, "ssim": 0.78,
                "bm3d_psnr": 29.9, "bm3d_ssim": 0.85, "images": 12, "noise_seed": 0}]
    return zoo.export_checkpoint(ckpt, out, name="tiny-prior", metrics=metrics,
                                 training={"data": "built-in photos", "hardware": "CPU"})


def test_export_then_load_gives_the_checkpoint_network(ckpt, folder):
    a, b = zoo.load(ckpt), zoo.load(f"local-dir:{folder}")
    assert not b.training
    y = torch.rand(2, 1, 24, 20)
    torch.testing.assert_close(a(y), b(y), rtol=0, atol=0)
    cfg = b.prior_config
    assert cfg["format_version"] == FORMAT_VERSION and cfg["kind"] == "denoiser"
    assert cfg["architecture"] == "test_bf_dncnn" and cfg["class_path"] == "priorlab.zoo.dncnn.DnCNN"
    assert cfg["channels"] == 1 and cfg["image_range"] == [0.0, 1.0] and cfg["sigma_range_255"] == [0.0, 100.0]
    assert cfg["training"]["data"] == "built-in photos" and cfg["metrics"][0]["psnr"] == 27.5
    # config.json alone rebuilds the network: class_path + init_args, as jsonargparse writes them.
    on_disk = json.loads((folder / "config.json").read_text())
    assert on_disk["init_args"] == a.arch_config["init_args"]


def test_card_has_front_matter_metrics_and_citations(folder):
    card = (folder / "README.md").read_text()
    head, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    import yaml

    meta = yaml.safe_load(head)
    assert meta["library_name"] == "priorlab" and "bias-free" in meta["tags"]
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["name"] == "set12"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"psnr": 27.5, "ssim": 0.78}
    assert "| 25 | – | 27.50 | 0.780 | 29.90 | 0.850 |" in body
    assert "mohan2020biasfree" in body and f'zoo.load("local-dir:{folder}")' in body  # where it really is
    assert f"--prior local-dir:{folder} --task sr --factor 4 --input photo.png --crop 96" in body


def test_energy_card_shows_energy_usage_not_a_blind_denoiser():
    from priorlab.zoo.card import render_card

    card = render_card(zoo.read_config(zoo.get_prior("dsm-energy-small-fashion-mnist").bundled_path()))
    assert "net.log_prob(x)" in card and "priorlab logp --prior dsm-energy-small-fashion-mnist" in card
    assert "x_hat = net(y) " not in card and "priorlab denoise" not in card  # σ is required by an energy model
    assert "guth2025dual" in card and "Log-probabilities of images" in card
    assert "log_prob only at 28x28 with 1 channel(s)" in card  # the size its normalization holds for
    assert "--data folder:my_images/ --resolution 28 --out logp/" in card  # folders of other sizes are resized
    assert "\nAn energy prior for gray natural images" in card


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["bf-dncnn-small-gray", "bf-unet-small-gray", "bf-unet-small-color",
                                  "bf-dncnn-small-gray-s10", "dncnn-small-gray-s10-biased"])
def test_card_fine_tuning_command_names_a_config_and_the_prior_network(name, capsys):
    import shlex

    from priorlab.lightning_modules import DenoiserModule
    from priorlab.zoo.card import render_card

    card = render_card(zoo.read_config(zoo.get_prior(name).bundled_path()))
    command = shlex.split(card.split("Fine-tune it")[1].split("```bash\n")[1].split("```")[0].replace("\\\n", " "))
    assert command[:2] == ["priorlab", "fit"]
    opts = dict(zip(command[2::2], command[3::2], strict=True))
    assert (REPO / opts["--config"]).is_file()
    command[command.index("--config") + 1] = str(REPO / opts["--config"])
    # The options parse with the config, and the network they name takes the prior's weights (strict load).
    with pytest.raises(SystemExit) as done:
        main([*command[1:], "--print_config"])
    assert done.value.code in (0, None) and f"init_from: {name}" in capsys.readouterr().out
    entry = zoo.get_prior(name)
    assert json.loads(opts["--model.init_args.sigma_range_255"]) == list(entry.sigma_range_255)  # e.g. [0, 10]
    DenoiserModule(arch=opts["--model.init_args.arch"], in_chans=entry.channels,
                   arch_args=json.loads(opts.get("--model.init_args.arch_args", "{}")),
                   init_from=opts["--model.init_args.init_from"])


def test_card_timm_example_runs_in_a_fresh_process_as_written():
    import subprocess
    import sys

    from priorlab.zoo.card import render_card

    card = render_card(zoo.read_config(zoo.get_prior("bf-dncnn-small-gray").bundled_path()),
                       timm_name="bf_dncnn_small.bsd400_gray_cpu")
    block = card.split("From timm")[1].split("```python\n")[1].split("```")[0]
    assert block.startswith("import priorlab.zoo")
    code = block + "import torch\nfrom priorlab import zoo\nref = zoo.load('bf-dncnn-small-gray')\n" \
        "assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values()))\n"
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_exported_energy_config_records_the_calibration_shape():
    from priorlab.zoo.artifact import build_config

    net = zoo.load("dsm-energy-small-fashion-mnist")
    config = build_config(net, kind="energy", sigma_range_255=net.prior_config["sigma_range_255"])
    assert config["calibration_shape"] == [1, 28, 28]
    net.calibration_shape = (1, 32, 32)
    assert build_config(net, kind="energy", sigma_range_255=[0, 1])["calibration_shape"] == [1, 32, 32]


def _copy(folder, dst):
    dst.mkdir()
    for f in folder.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_loading_is_strict(folder, tmp_path):
    state = load_file(str(folder / "model.safetensors"))
    missing = _copy(folder, tmp_path / "missing")
    save_file({k: v for k, v in list(state.items())[1:]}, str(missing / "model.safetensors"))
    with pytest.raises(ValueError, match="Missing key"):
        load_folder(missing)
    extra = _copy(folder, tmp_path / "extra")
    save_file({**state, "surplus.weight": torch.zeros(1)}, str(extra / "model.safetensors"))
    with pytest.raises(ValueError, match="Unexpected key"):
        load_folder(extra)


def test_bad_folders_get_clear_errors(folder, tmp_path):
    newer = _copy(folder, tmp_path / "newer")
    cfg = json.loads((newer / "config.json").read_text())
    (newer / "config.json").write_text(json.dumps({**cfg, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match="upgrade priorlab"):
        load_folder(newer)
    corrupt = _copy(folder, tmp_path / "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="cannot read"):
        load_folder(corrupt)
    pickled = _copy(folder, tmp_path / "pickled")
    (pickled / "model.safetensors").unlink()
    torch.save({}, pickled / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="pickled weights are never loaded"):
        load_folder(pickled)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_folder(tmp_path)
    (tmp_path / "nojson").mkdir()
    (tmp_path / "nojson" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_folder(tmp_path / "nojson")
    with pytest.raises(ValueError, match="sha256"):
        load_folder(folder, expected_sha256="0" * 64)


def test_save_folder_never_clobbers_user_files(ckpt, folder, tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        zoo.export_checkpoint(ckpt, target)
    zoo.export_checkpoint(ckpt, target, overwrite=True)
    assert (target / "notes.txt").read_text() == "mine" and (target / "model.safetensors").is_file()
    with pytest.raises(FileExistsError, match="already holds"):
        zoo.export_checkpoint(ckpt, target)


BUNDLED = [e.name for e in zoo.list_priors() if e.bundled is not None]


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_prior_loads_offline_and_matches_its_pin(name):
    entry = zoo.get_prior(name)
    assert zoo.sha256_file(entry.bundled_path() / "model.safetensors") == entry.sha256
    net = zoo.load(name)
    assert not net.training and net.prior_config["source"] == name
    assert sum(p.numel() for p in net.parameters()) == entry.params
    assert net.prior_config["channels"] == entry.channels
    assert (entry.bundled_path() / "README.md").read_text().startswith("---")  # a card with front matter
    if entry.kind == "energy":  # normalized: log p of 8-bit images in one pass, and a sigma-conditioned denoiser
        assert net.is_calibrated
        x = torch.zeros(2, entry.channels, 28, 28)
        x[0, :, 4:24, 8:20], x[1, :, 10:18, 3:25] = 153 / 255, 204 / 255  # garment-like blobs on black, 8-bit
        assert torch.isfinite(net.log_prob(x)).all()
        y = x + 0.1 * torch.randn_like(x)
        assert (net(y, 0.1) - x).pow(2).mean() < (y - x).pow(2).mean()
        return
    ramp = torch.linspace(0.2, 0.8, 32)
    x = (ramp[:, None] + ramp[None, :]).div(2).expand(1, entry.channels, 32, 32)  # smooth, inside [0, 1]
    noisy = x + (5 / 255) * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))  # in every range
    with torch.no_grad():
        assert (net(noisy) - x).pow(2).mean() < (noisy - x).pow(2).mean()  # it denoises
    y = torch.rand(1, entry.channels, 32, 32)
    with torch.no_grad():
        gap = (net(3.0 * y) - 3.0 * net(y)).abs().max()
    if entry.architecture.startswith("bf_unet"):  # any size >= 8 works: the card says so, and the network pads
        assert "reflect-padded" in (entry.bundled_path() / "README.md").read_text()
        with torch.no_grad():
            assert net(torch.rand(1, entry.channels, 13, 21)).shape == (1, entry.channels, 13, 21)
    if net.prior_config["init_args"].get("bias"):  # the biased counterpart is not homogeneous
        assert gap > 1e-3
    else:
        assert gap < 1e-4  # bias-free: x̂(αy) = αx̂(y)


def test_every_catalog_entry_is_consistent():
    for entry in zoo.list_priors():
        if entry.bundled is None:
            continue
        cfg = zoo.read_config(entry.bundled_path())
        assert (cfg["architecture"], cfg["kind"], cfg["channels"]) == (entry.architecture, entry.kind,
                                                                        entry.channels)
        assert tuple(cfg["sigma_range_255"]) == tuple(entry.sigma_range_255)


def test_timm_pretrained_loads_the_same_weights():
    entry = zoo.get_prior("bf-dncnn-small-gray")
    a = zoo.load(entry.name)
    b = timm.create_model(entry.timm_name, pretrained=True)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    # A name without a tag picks the weights with the requested channel count (gray by default).
    assert timm.create_model("bf_dncnn_small", pretrained=True).prior_config["channels"] == 1
    assert timm.create_model("bf_dncnn_small", pretrained=True, in_chans=3).prior_config["channels"] == 3
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("bf_dncnn_small.no_such_tag", pretrained=True)
    with pytest.raises(ValueError, match="cannot be built"):
        timm.create_model(entry.timm_name, pretrained=True, width=16)


def test_names_and_paths_are_never_confused(tmp_path):
    with pytest.raises(KeyError, match="Did you mean 'bf-dncnn-small-gray'"):
        zoo.load("bf-dncnn-small-grey")
    with pytest.raises(FileNotFoundError, match="hf-hub:org/prior"):
        zoo.load("org/prior")
    with pytest.raises(ValueError, match="local-dir:"):
        zoo.load(str(tmp_path) + "/")
    with pytest.raises(ValueError, match="not a Hub repository id"):
        zoo.load("hf-hub:not a repo")


def test_catalog_validates_entries():
    base = dict(name="x-prior", kind="denoiser", architecture="test_bf_dncnn", channels=1, params=1, data="d",
                sigma_range_255=(0.0, 1.0), headline="h", sha256="a" * 64)
    with pytest.raises(ValueError, match="exactly one"):
        PriorEntry(**base)
    with pytest.raises(ValueError, match="40-hex commit"):
        PriorEntry(**base, hub_repo="org/x", revision="main")
    with pytest.raises(ValueError, match="lower-case"):
        PriorEntry(**{**base, "name": "X_Prior"}, bundled="x")
    with pytest.raises(ValueError, match="already in the catalog"):
        zoo.register_prior(zoo.get_prior("bf-dncnn-small-gray"))


def test_cli_zoo_list_show_and_export(ckpt, tmp_path, capsys):
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    assert "bf-dncnn-small-gray" in out and "bundled" in out and "bf_dncnn_small.bsd400_gray_cpu" in out
    assert main(["zoo", "show", "bf-dncnn-small-gray"]) == 0
    assert "## Results" in capsys.readouterr().out
    assert main(["zoo", "show", "nope"]) == 2
    assert "unknown prior" in capsys.readouterr().err
    bench = {"seed": 0, "command": ["python", "benchmarks/denoise_quality.py"], "records": [
        {"method": m, "dataset": "set12", "image": f"{i}.png", "index": i, "sigma_255": 25.0, "psnr_in": 20.2,
         "psnr": p + i, "ssim": 0.5, "seconds": 0.1} for m, p in [("mine", 28.0), ("BM3D", 29.0)] for i in range(2)]}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    out_dir = tmp_path / "exported"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out_dir), "--name", "my-prior",
                 "--metrics", str(tmp_path / "bench.json"), "--limitations", "Weak at low noise.",
                 "--load_spec", "hf-hub:org/my-prior"]) == 0
    card = (out_dir / "README.md").read_text()
    assert "## Limitations\n\nWeak at low noise." in card and 'zoo.load("hf-hub:org/my-prior")' in card
    capsys.readouterr()
    assert main(["zoo", "show", f"local-dir:{out_dir}"]) == 0 and capsys.readouterr().out == card
    cfg = json.loads((out_dir / "config.json").read_text())
    assert cfg["metrics"][0] == {"dataset": "set12", "split": "test", "sigma_255": 25.0, "images": 2,
                                 "noise_seed": 0, "psnr_in": 20.2, "psnr": 28.5, "ssim": 0.5, "bm3d_psnr": 29.5,
                                 "bm3d_ssim": 0.5}
    assert cfg["metrics_source"] == "python benchmarks/denoise_quality.py"
    capsys.readouterr()
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out_dir)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    (tmp_path / "list.json").write_text("[1, 2, 3]")
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "e2"), "--metrics",
                 str(tmp_path / "list.json")]) == 2
    assert "every record must be an object" in capsys.readouterr().err and not (tmp_path / "e2").exists()
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "e3"), "--name", "../../evil name"]) == 2
    assert "not a valid prior name" in capsys.readouterr().err and not (tmp_path / "e3").exists()


def test_card_training_is_read_from_the_checkpoint_and_explicit_options_win(tmp_path, monkeypatch, capsys):
    """A 1-step run on the built-in photos plus a folder under $HOME: the card names both (the home folder as ~),
    the patch size, the learning rate and its schedule, the EMA; --data and --training replace what was read."""
    import numpy as np
    from PIL import Image

    from priorlab.lightning_modules import EMA

    home = tmp_path / "home"
    photos = home / "data" / "my-photos"
    photos.mkdir(parents=True)
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 40), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"{i}.png")
    monkeypatch.setenv("HOME", str(home))
    run = tmp_path / "run"  # the layout of `priorlab fit`: run/config.yaml beside run/checkpoints/
    cb = ModelCheckpoint(dirpath=run / "checkpoints", save_last=True)
    module = tiny_module(1, lr=3e-4, milestones=(1,), lr_gamma=0.25)
    data = tiny_data(1, train_dirs=["builtin:photos", str(photos)], patch_size=16, batch_size=4)
    tiny_trainer(run, max_steps=1, callbacks=[cb, EMA(decay=0.9)], limit_val_batches=0).fit(module, datamodule=data)
    (run / "config.yaml").write_text(
        "trainer:\n  precision: bf16-mixed\n  callbacks:\n  - class_path: priorlab.lightning_modules.EMA\n"
        "    init_args: {decay: 0.9}\nmodel:\n  init_args: {arch: test_bf_dncnn, lr: 0.0003}\n"
        "data:\n  init_args: {patch_size: 16, batch_size: 4}\n")
    ckpt, out = run / "checkpoints" / "last.ckpt", tmp_path / "card-from-ckpt"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    training = card.split("## Training\n")[1].split("\n## ")[0]
    assert "- **Data**: builtin:photos, ~/data/my-photos\n" in training
    assert str(home) not in card  # the public card does not show the home folder
    assert "4 per step and device: random 16x16 patches" in training and "16 patches per epoch" in training
    assert "- **Length**: 1 optimizer step in 1 epoch\n" in training
    assert "Adam, learning rate 0.0003, multiplied by 0.25 at the end of epoch(s) 1" in training
    assert "EMA of the weights (decay 0.9)" in training and "- **Precision**: bf16-mixed" in training
    assert "Trained on the data named above" in card
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["data"] == "builtin:photos, ~/data/my-photos"

    (tmp_path / "training.json").write_text(json.dumps({"optimizer": "SGD, written by hand", "precision": None}))
    capsys.readouterr()
    assert main(["export", "--ckpt", str(ckpt), "--out", str(out), "--overwrite", "--data", "BSD400, 400 images",
                 "--training", str(tmp_path / "training.json")]) == 0
    training = (out / "README.md").read_text().split("## Training\n")[1].split("\n## ")[0]
    assert "- **Data**: BSD400, 400 images\n" in training and "my-photos" not in training
    assert "- **Optimizer**: SGD, written by hand" in training and "Adam" not in training
    assert "Precision" not in training and "16x16 patches" in training  # null removes; the rest stays

    # A card that names no data never points at "the data named above".
    bare = zoo.export_checkpoint(ckpt, tmp_path / "no-data", training={"data": None})
    card = (bare / "README.md").read_text()
    assert "**Data**" not in card and "named above" not in card and "training data are not recorded" in card

    # Without the run's config.yaml the decay still comes from the checkpoint (priorlab's EMA stores it).
    (run / "config.yaml").unlink()
    facts = zoo.export.training_from_checkpoint(ckpt)
    assert "(decay 0.9)" in facts["ema"] and "precision" not in facts

    # A fine-tuned prior's card names its parent first (with the command that shows the parent's card).
    run2 = tmp_path / "run2"
    module2 = tiny_module(1, init_from=f"local-dir:{out}")
    tiny_trainer(run2, max_steps=1, callbacks=[ModelCheckpoint(dirpath=run2 / "checkpoints", save_last=True)],
                 limit_val_batches=0).fit(module2, datamodule=tiny_data(1, patch_size=16, batch_size=4))
    init = zoo.export.training_from_checkpoint(run2 / "checkpoints" / "last.ckpt")["init"]
    assert init.startswith(f"fine-tuned from `local-dir:{out}` (its card: `priorlab zoo show local-dir:{out}`)")
    assert "init" not in facts  # trained from scratch: nothing claimed
    fake = tmp_path / "from-hub.ckpt"  # a Hub parent: `zoo show` does not take hf-hub: names
    torch.save({"hyper_parameters": {"init_from": "hf-hub:org/prior@main"}}, fake)
    init = zoo.export.training_from_checkpoint(fake)["init"]
    assert "`hf-hub:org/prior@main` (its card: the README.md of that Hub repository)" in init


def test_weights_only_checkpoint_of_an_ema_run_is_not_called_an_average(tmp_path):
    # save_weights_only skips the callbacks' state, so the EMA average never reaches the file: export warns,
    # and the card says the weights are the last step's instead of claiming nothing (or an EMA).
    from priorlab.lightning_modules import EMA

    run = tmp_path / "run"
    cb = ModelCheckpoint(dirpath=run / "checkpoints", save_last=True, save_weights_only=True)
    tiny_trainer(run, max_steps=2, callbacks=[cb, EMA(decay=0.9)], limit_val_batches=0).fit(
        tiny_module(1), datamodule=tiny_data(1, patch_size=16, batch_size=4))
    (run / "config.yaml").write_text("trainer:\n  callbacks:\n  - class_path: priorlab.lightning_modules.EMA\n"
                                     "    init_args: {decay: 0.9}\n")
    with pytest.warns(UserWarning, match="not their EMA.*export a full checkpoint"):
        out = zoo.export_checkpoint(run / "checkpoints" / "last.ckpt", tmp_path / "raw")
    training = (out / "README.md").read_text().split("## Training\n")[1].split("\n## ")[0]
    assert "the weights of the last optimizer step, not their EMA" in training and "EMA of the weights" not in training


def test_exported_metrics_set_only_like_trained_published_curves_beside():
    from priorlab.cli.export import metrics_from_benchmark

    def payload(sigma_range, bias):
        cfg = {"sigma_range_255": sigma_range, "arch_config": {"init_args": {"bias": bias}}}
        return {"seed": 0, "models": {"m": {"prior_config": cfg}}, "records": [
            {"method": "m", "dataset": "bsd68", "image": "a.png", "index": 0, "sigma_255": 90.0, "psnr_in": 10.9,
             "psnr": 20.0, "ssim": 0.5, "seconds": 0.1}]}

    published = {}
    for key in [([0.0, 10.0], False), ([0.0, 10.0], True), ([0.0, 100.0], False), ([0.0, 55.0], False)]:
        row = metrics_from_benchmark(payload(*key))[0][0]
        published[str(key)] = (row.get("published_psnr"), row.get("published_source", ""))
    assert published[str(([0.0, 10.0], False))][0] == 23.25
    assert published[str(([0.0, 10.0], True))][0] == 11.07  # the biased curve collapses out of range
    assert published[str(([0.0, 100.0], False))][0] == 24.07
    assert published[str(([0.0, 55.0], False))][0] is None  # no published curve for that range here
    assert "[0,10]" in published[str(([0.0, 10.0], True))][1]
    # A prior loaded by name records its bias in config.json's top-level init_args, not arch_config.
    folder = payload([0.0, 10.0], True)
    folder["models"]["m"]["prior_config"] = {"sigma_range_255": [0.0, 10.0], "init_args": {"bias": True}}
    assert metrics_from_benchmark(folder)[0][0]["published_psnr"] == 11.07
    legacy = payload([0.0, 10.0], False)
    del legacy["models"]  # a JSON that does not say how the model was trained gets no published numbers
    assert "published_psnr" not in metrics_from_benchmark(legacy)[0][0]


def test_commands_and_fine_tuning_take_a_prior_name(tmp_path, capsys):
    from PIL import Image

    img = (torch.linspace(0, 1, 32 * 32).reshape(32, 32) * 255).to(torch.uint8).numpy()
    Image.fromarray(img).save(tmp_path / "ramp.png")
    assert main(["denoise", "--prior", "bf-dncnn-small-gray", "--input", str(tmp_path / "ramp.png"),
                 "--sigma", "25", "--output", str(tmp_path / "out.png")]) == 0
    assert (tmp_path / "out.png").is_file() and "PSNR" in capsys.readouterr().out
    tuned = tiny_module(arch="bf_dncnn_small", init_from="bf-dncnn-small-gray")
    for a, b in zip(tuned.net.state_dict().values(), zoo.load("bf-dncnn-small-gray").state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="init_from=bf-dncnn-small-gray holds"):
        tiny_module(init_from="bf-dncnn-small-gray")
