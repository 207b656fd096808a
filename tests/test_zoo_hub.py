"""Hub round trips against a real Hub-protocol server on loopback (olah serving local git repositories).

Covers push → pull → load, download by catalog name and by ``hf-hub:`` id at a pinned revision, cache
reuse, offline mode, a tampered file (hash mismatch) and a missing file; and ``priorlab hub push`` through
the real upload client failing clearly (offline mode, a closed loopback port, a loopback server that answers
401/403/404). Nothing touches the internet.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from priorlab import zoo
from priorlab.cli import main
from priorlab.cli.hub import run as hub_cli
from priorlab.zoo.catalog import PriorEntry
from priorlab.zoo.hub import HubClient, HubError, push_prior
from tests.helpers import tiny_data, tiny_module, tiny_trainer
from tests.hub_server import GitMirrorClient, OlahServer, free_port

pytest.importorskip("olah")
pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = OlahServer(tmp_path_factory.mktemp("olah"))
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two exported priors of the same architecture with different weights."""
    out = []
    for seed in (0, 1):
        root = tmp_path_factory.mktemp(f"prior{seed}")
        torch.manual_seed(seed)
        cb = ModelCheckpoint(dirpath=root, save_last=True)
        tiny_trainer(root, callbacks=[cb], limit_val_batches=0).fit(tiny_module(1), datamodule=tiny_data(1))
        out.append(zoo.export_checkpoint(root / "last.ckpt", root / "folder", name=f"hub-test-{seed}"))
    return out


@pytest.fixture
def online(server, tmp_path, monkeypatch):
    """huggingface_hub pointed at the olah server, online, with a fresh cache (constants are read at import)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return server


def _outputs_equal(a, b) -> bool:
    y = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a(y), b(y))


def test_git_mirror_client_is_a_hub_client(server):
    assert isinstance(GitMirrorClient(server.mirrors), HubClient)


def test_push_pull_load_round_trip_with_pinned_revisions(online, folders, monkeypatch):
    client = GitMirrorClient(online.mirrors)
    first = push_prior(folders[0], "org/round-trip", client=client)
    second = push_prior(folders[1], "org/round-trip", client=client)
    assert first != second
    want0, want1 = (zoo.load(f"local-dir:{f}") for f in folders)
    assert not _outputs_equal(want0, want1)
    pinned = zoo.load(f"hf-hub:org/round-trip@{first}")
    assert _outputs_equal(pinned, want0) and pinned.prior_config["source"].endswith(first)
    latest = zoo.load("hf-hub:org/round-trip")
    assert _outputs_equal(latest, want1) and latest.prior_config["source"].endswith(second)
    # cache reuse: offline, the same pinned revision loads from the files the downloads left behind
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert _outputs_equal(zoo.load(f"hf-hub:org/round-trip@{first}"), want0)
    with pytest.raises(HubError, match="not in the local Hugging Face cache"):
        zoo.load("hf-hub:org/never-downloaded")


def test_push_publishes_only_the_prior_files(online, folders, tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    shutil.copytree(folders[0], folder)
    (folder / "notes.txt").write_text("my private notes")
    (folder / ".model.tmp123.safetensors").write_bytes(b"left by an interrupted write")
    client = GitMirrorClient(online.mirrors)
    monkeypatch.chdir(folder)  # pushed as ".": a folder without a name of its own
    commit = push_prior(".", "org/only-prior", client=client)
    tree = subprocess.run(["git", "ls-tree", "--name-only", commit], cwd=client.repo_path("org/only-prior"),
                          capture_output=True, text=True, check=True).stdout.split()
    assert sorted(tree) == ["README.md", "config.json", "model.safetensors"]
    assert (folder / "notes.txt").is_file()  # the user's folder is left as it was


def test_catalog_name_downloads_at_the_pin_and_checks_the_hash(online, folders):
    client = GitMirrorClient(online.mirrors)
    commit = push_prior(folders[0], "org/by-name", client=client)
    good = PriorEntry(name="hub-test-prior", kind="denoiser", architecture="test_bf_dncnn", channels=1, params=1,
                      data="photos", sigma_range_255=(0.0, 100.0), headline="-",
                      sha256=zoo.sha256_file(folders[0] / "model.safetensors"), hub_repo="org/by-name",
                      revision=commit)
    zoo.register_prior(good)
    try:
        push_prior(folders[1], "org/by-name", client=client)  # a later push must not change what the name loads
        net = zoo.load("hub-test-prior")
        assert _outputs_equal(net, zoo.load(f"local-dir:{folders[0]}"))
        assert net.prior_config["source"] == f"hf-hub:org/by-name@{commit}"
        zoo.register_prior(PriorEntry(**{**good.__dict__, "sha256": "f" * 64}), replace=True)
        with pytest.raises(HubError, match="was not loaded"):
            zoo.load("hub-test-prior")
    finally:
        zoo.unregister_prior("hub-test-prior")


def test_tampered_file_is_refused(online, folders):
    client = GitMirrorClient(online.mirrors)
    commit = push_prior(folders[0], "org/tampered", client=client)
    digest = zoo.sha256_file(folders[0] / "model.safetensors")
    repo = client.repo_path("org/tampered")
    data = bytearray((repo / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last weight
    (repo / "model.safetensors").write_bytes(bytes(data))
    bad = client.commit("org/tampered", "tamper")
    assert bad != commit
    zoo.register_prior(PriorEntry(name="tampered-prior", kind="denoiser", architecture="test_bf_dncnn", channels=1,
                                  params=1, data="photos", sigma_range_255=(0.0, 100.0), headline="-",
                                  sha256=digest, hub_repo="org/tampered", revision=bad))
    try:
        with pytest.raises(HubError, match="sha256") as err:
            zoo.load("tampered-prior")
        assert "`priorlab hub pull tampered-prior --force`" in str(err.value)  # a command that works
    finally:
        zoo.unregister_prior("tampered-prior")


def test_missing_weights_and_missing_repo_are_explained(online, folders, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_bytes((folders[0] / "config.json").read_bytes())
    client = GitMirrorClient(online.mirrors)
    client.create_repo("org/partial")
    client.upload_folder(partial, "org/partial")
    with pytest.raises(HubError, match="model.safetensors is missing"):
        zoo.load("hf-hub:org/partial")
    with pytest.raises(HubError, match="not found"):
        zoo.load("hf-hub:org/does-not-exist")


def test_push_refuses_folders_that_would_not_load(online, folders, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((folders[0] / "config.json").read_bytes())
    with pytest.raises(FileNotFoundError):
        push_prior(broken, "org/broken", client=GitMirrorClient(online.mirrors))
    assert not GitMirrorClient(online.mirrors).repo_path("org/broken").exists()


def test_cli_push_then_pull_fills_the_standard_cache_for_offline_use(server, folders, tmp_path, capsys):
    """The user's path: HF_ENDPOINT in the environment, `priorlab hub pull`, then HF_HUB_OFFLINE=1 loads."""
    assert hub_cli(["push", str(folders[1]), "--repo-id", "org/cli-prior"], client=GitMirrorClient(server.mirrors)) == 0
    out = capsys.readouterr().out
    commit = out.split("at commit ")[1].split()[0]
    env = {**os.environ, "HF_ENDPOINT": server.endpoint, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0",
           "PYTHONPATH": str(REPO)}
    pull = subprocess.run([sys.executable, "-m", "priorlab", "hub", "pull", f"hf-hub:org/cli-prior@{commit}"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert pull.returncode == 0, pull.stderr
    snapshot = tmp_path / "hf" / "hub" / "models--org--cli-prior" / "snapshots" / commit
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in snapshot.iterdir()}
    env["HF_HUB_OFFLINE"] = "1"
    code = (f"from priorlab import zoo; net = zoo.load('hf-hub:org/cli-prior@{commit}'); "
            "print(net.prior_config['name'], net.prior_config['source'])")
    load = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert load.returncode == 0, load.stderr
    assert load.stdout.split() == ["hub-test-1", f"hf-hub:org/cli-prior@{commit}"]


def test_cli_push_in_offline_mode_says_so_without_a_traceback(folders, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": "hf_not_a_real_token",
           "PYTHONPATH": str(REPO)}
    push = subprocess.run([sys.executable, "-m", "priorlab", "hub", "push", str(folders[0]), "--repo-id",
                           "org/offline"], env=env, capture_output=True, text=True, timeout=300)
    assert push.returncode != 0
    assert "Traceback" not in push.stderr and "HF_HUB_OFFLINE=1 is set" in push.stderr, push.stderr
    assert "Nothing was published" in push.stderr


@pytest.fixture
def hub_at(monkeypatch):
    """Point the real upload client (huggingface_hub, read at import) at an endpoint, online, with a fake token."""
    from huggingface_hub import constants

    def point(endpoint: str) -> None:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")  # never a token of this machine's user
        monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)

    return point


def test_cli_push_to_an_unreachable_endpoint_says_so_without_a_traceback(folders, hub_at, capsys):
    endpoint = f"http://127.0.0.1:{free_port()}"  # a closed loopback port: connection refused at once
    hub_at(endpoint)
    assert main(["hub", "push", str(folders[0]), "--repo-id", "org/unreachable"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"the Hub at {endpoint} cannot be reached" in err, err
    assert "HF_ENDPOINT" in err and "Nothing was published" in err


class _RefusingHub(BaseHTTPRequestHandler):
    """Answers every request with ``server.status`` and a Hub-style JSON error, except repository creation when
    ``server.create_ok`` (then the repository "exists" and the upload is what fails)."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path == "/api/repos/create" and self.server.create_ok:
            code, body = 200, {"url": f"http://{self.headers['Host']}/org/name"}
        else:
            code, body = self.server.status, {"error": "refused by the test server"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_HEAD = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def refusing_hub():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingHub)
    srv.status, srv.create_ok = 403, False
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


@pytest.mark.parametrize("status,create_ok,expected", [
    (401, False, ["401 Unauthorized", "`hf auth login` or set HF_TOKEN", "Nothing was published"]),
    (403, False, ["403 Forbidden: refused by the test server", "write access to org/name",
                  "`hf auth login` or set HF_TOKEN", "Nothing was published"]),
    (404, False, ["404 Not Found", "no organization or user 'org'", "Nothing was published"]),
    (403, True, ["cannot upload", "403 Forbidden", "Half done: the repository org/name exists",
                 "no commit was made", "Run the same push again"]),
])
def test_cli_push_refused_by_the_hub_explains_what_to_do(folders, hub_at, refusing_hub, capsys, status, create_ok,
                                                         expected):
    refusing_hub.status, refusing_hub.create_ok = status, create_ok
    hub_at(f"http://127.0.0.1:{refusing_hub.server_address[1]}")
    assert main(["hub", "push", str(folders[0]), "--repo-id", "org/name"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, err
