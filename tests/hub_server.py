"""A real Hub-protocol server on loopback for tests: olah serving local git repositories.

``olah`` (ecosystem.md §4) serves ``<mirrors>/models/<org>/<name>/`` git repositories as Hub model
repositories; every commit is a revision clients can pin. :class:`GitMirrorClient` is the test side of
priorlab's :class:`~priorlab.zoo.hub.HubClient` upload interface: it commits a folder into such a
repository, so push → pull → load round trips go through the real download code.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

GIT = ["git", "-c", "user.name=priorlab-tests", "-c", "user.email=tests@priorlab.invalid", "-c",
       "init.defaultBranch=main", "-c", "commit.gpgsign=false"]


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True)
    return out.stdout.strip()


class GitMirrorClient:
    """``HubClient`` that commits into git repositories under olah's ``mirrors-path``."""

    def __init__(self, mirrors: Path) -> None:
        self.mirrors = Path(mirrors)

    def repo_path(self, repo_id: str) -> Path:
        return self.mirrors / "models" / repo_id

    def create_repo(self, repo_id: str, *, private: bool = False) -> None:
        path = self.repo_path(repo_id)
        if not (path / ".git").is_dir():
            path.mkdir(parents=True, exist_ok=True)
            _git(path, "init", "-q")

    def upload_folder(self, folder: Path, repo_id: str, *, revision: str | None = None,
                      commit_message: str = "") -> str:
        path = self.repo_path(repo_id)
        if revision not in (None, "main"):
            raise NotImplementedError("the git mirror client commits to main only")
        for item in Path(folder).iterdir():
            if item.is_file():
                shutil.copy2(item, path / item.name)
        return self.commit(repo_id, commit_message or "upload")

    def commit(self, repo_id: str, message: str) -> str:
        """Commit the repository's working tree as it is (e.g. after a test edited a file)."""
        path = self.repo_path(repo_id)
        # Re-hash every file: a copied file keeps its source's mtime (copy2) and two exports of the same size made
        # in the same second look unchanged to git's stat cache, so `add -A` alone could commit the old weights.
        _git(path, "rm", "-r", "-q", "--cached", "--ignore-unmatch", ".")
        _git(path, "add", "-A")
        _git(path, "commit", "-q", "--allow-empty", "-m", message)
        return _git(path, "rev-parse", "HEAD")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OlahServer:
    """Start ``olah-cli`` in offline mode on a free loopback port; stop it on :meth:`close`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.mirrors = self.root / "mirrors"
        self.mirrors.mkdir(parents=True, exist_ok=True)
        (self.root / "olah-cache").mkdir(exist_ok=True)
        self.port = free_port()
        config = self.root / "olah.toml"
        config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.port}\n'
            f'repos-path = "{self.root / "olah-cache"}"\nmirrors-path = ["{self.mirrors}"]\n'
            f'mirror-netloc = "127.0.0.1:{self.port}"\nmirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            "\n[accessibility]\noffline = true\n")
        cli = shutil.which("olah-cli") or str(Path(sys.executable).with_name("olah-cli"))
        self.log = open(self.root / "olah.log", "w")  # noqa: SIM115  (closed in close())
        self.proc = subprocess.Popen([cli, "-c", str(config)], cwd=self.root, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"olah exited with {self.proc.returncode}: {(self.root / 'olah.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        self.close()
        raise RuntimeError("olah did not start within 60 s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
