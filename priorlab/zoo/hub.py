"""Hugging Face Hub access: the only module of priorlab that imports ``huggingface_hub``.

Downloads follow ecosystem.md §2.3: fetch ``config.json`` first, read the commit it resolved to from
the cache path (``snapshots/<commit>/``), then fetch the weights at that same commit, so a push between
the two requests cannot pair a config with other weights. No ``/api`` call is made on the load path
(it breaks offline mode and mirrors). Files land in the standard HF cache (``HF_HOME`` /
``HF_HUB_CACHE``), so ``HF_HUB_OFFLINE=1`` then loads from the cache only. ``HF_ENDPOINT`` points the
client at any Hub-compatible server.

Uploads go through the small :class:`HubClient` interface; :class:`HfHubClient` is the real one.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from priorlab.zoo.artifact import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, sha256_file

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class HubError(RuntimeError):
    """A Hub download or upload failed; the message says why and what to do."""


@dataclass(frozen=True)
class HubSource:
    """A parsed ``hf-hub:ORG/REPO[@REVISION]`` reference."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"hf-hub:{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def parse_hub_source(spec: str) -> HubSource:
    """Parse ``hf-hub:ORG/REPO[@REVISION]`` (the prefix is optional here)."""
    text = spec[len("hf-hub:"):] if spec.startswith("hf-hub:") else spec
    repo_id, _, revision = text.partition("@")
    check_repo_id(repo_id)
    if "@" in text and not revision:
        raise ValueError(f"{spec!r}: empty revision after '@'")
    return HubSource(repo_id, revision or None)


def check_repo_id(repo_id: str) -> str:
    """Validate ``ORG/NAME``."""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise ValueError(f"{repo_id!r} is not a Hub repository id; expected ORG/NAME, e.g. priorlab/bf-dncnn-gray")
    return repo_id


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection errors of whichever HTTP client ``huggingface_hub`` uses (httpx2, httpx or requests).

    They are not ``OSError`` subclasses; only clients already imported are looked up, so nothing new is imported.
    """
    out: list[type[BaseException]] = [OSError]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
        mod = sys.modules.get(module)
        out += [getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type)]
    return tuple(out)


def _explain(err: Exception, repo_id: str, revision: str | None, filename: str) -> HubError:
    from huggingface_hub import errors

    where = f"{repo_id}@{revision}" if revision else repo_id
    if isinstance(err, errors.RevisionNotFoundError):
        return HubError(f"revision {revision!r} not found in Hub repository {repo_id}")
    if isinstance(err, errors.RepositoryNotFoundError):
        return HubError(f"Hub repository {repo_id} not found (or private: log in with `hf auth login` or set "
                        "HF_TOKEN)")
    if isinstance(err, errors.RemoteEntryNotFoundError):
        return HubError(f"{filename} is missing from {where}: not a priorlab prior folder "
                        "(it needs config.json and model.safetensors)")
    if isinstance(err, errors.LocalEntryNotFoundError):
        from huggingface_hub import constants

        fix = ("unset HF_HUB_OFFLINE and, with network, run" if constants.HF_HUB_OFFLINE
               else "fetch it once with network:")
        return HubError(f"{filename} of {where} is not in the local Hugging Face cache and the Hub cannot be reached "
                        f"(HF_HUB_OFFLINE=1 or no network); {fix} `priorlab hub pull hf-hub:{where}`")
    if isinstance(err, errors.OfflineModeIsEnabled):
        return HubError(f"cannot download {filename} of {where}: HF_HUB_OFFLINE=1 is set; unset it or pull the "
                        "prior while online")
    return HubError(f"downloading {filename} of {where} failed: {err}")


def download_prior(repo_id: str, *, revision: str | None = None, expected_sha256: str | None = None,
                   cache_dir: str | Path | None = None, local_files_only: bool = False,
                   force_download: bool = False, endpoint: str | None = None, name: str | None = None) -> Path:
    """Download a prior folder into the Hugging Face cache; returns its snapshot folder.

    Args:
        repo_id: ``ORG/NAME``.
        revision: branch, tag or 40-hex commit (default: ``main``).
        expected_sha256: if given, ``model.safetensors`` must have this hash, else :class:`HubError`
            (the file is not used).
        cache_dir: HF cache folder (default: ``HF_HUB_CACHE``).
        local_files_only: use the cache only (also implied by ``HF_HUB_OFFLINE=1``).
        force_download: download again even if cached.
        endpoint: Hub server URL (default: ``HF_ENDPOINT`` or huggingface.co).

    Returns:
        ``.../snapshots/<commit>/`` with config.json, model.safetensors and (when published) README.md.
    """
    from huggingface_hub import __version__ as hub_version
    from huggingface_hub import errors, hf_hub_download

    from priorlab import __version__

    check_repo_id(repo_id)
    common = dict(cache_dir=cache_dir, local_files_only=local_files_only, force_download=force_download,
                  endpoint=endpoint, library_name="priorlab", library_version=__version__)
    try:
        config_path = Path(hf_hub_download(repo_id, CONFIG_NAME, revision=revision, **common))
    except (errors.HfHubHTTPError, errors.EntryNotFoundError, errors.OfflineModeIsEnabled) as err:
        raise _explain(err, repo_id, revision, CONFIG_NAME) from err
    except _transport_errors() as err:
        raise HubError(f"cannot reach the Hub for {repo_id} ({err}); check the network or HF_ENDPOINT, or set "
                       f"HF_HUB_OFFLINE=1 to use the cache (huggingface_hub {hub_version})") from err
    commit = config_path.parent.name
    pinned = commit if _COMMIT.match(commit) else revision  # the same commit for every file (§2.3)
    try:
        weights = Path(hf_hub_download(repo_id, WEIGHTS_NAME, revision=pinned, **common))
    except (errors.HfHubHTTPError, errors.EntryNotFoundError, errors.OfflineModeIsEnabled) as err:
        raise _explain(err, repo_id, pinned, WEIGHTS_NAME) from err
    try:
        hf_hub_download(repo_id, CARD_NAME, revision=pinned, **common)
    except (errors.HfHubHTTPError, errors.EntryNotFoundError, errors.OfflineModeIsEnabled, *_transport_errors()):
        pass  # the card is documentation; a prior without one still loads
    if expected_sha256 is not None:
        actual = sha256_file(weights)
        if actual != expected_sha256:
            raise HubError(f"{WEIGHTS_NAME} of {repo_id}@{pinned} has sha256 {actual}, expected {expected_sha256}; "
                           "it was not loaded. The cached or served file differs from the registered release: "
                           f"download it again with `priorlab hub pull {name or f'hf-hub:{repo_id}@{pinned}'} "
                           "--force`, and report it if it persists")
    if weights.parent != config_path.parent:
        raise HubError(f"{repo_id}: config.json and model.safetensors resolved to different commits")
    return config_path.parent


@runtime_checkable
class HubClient(Protocol):
    """Everything priorlab writes to a Hub goes through these two calls."""

    def create_repo(self, repo_id: str, *, private: bool = False) -> None:
        """Create the model repository if it does not exist."""
        ...

    def upload_folder(self, folder: Path, repo_id: str, *, revision: str | None = None,
                      commit_message: str = "") -> str:
        """Upload the folder's files as one commit on ``revision`` (a branch); returns the commit sha."""
        ...


def _explain_write(err: Exception, repo_id: str, endpoint: str, action: str) -> HubError | None:
    """A clear :class:`HubError` for a failed Hub write, or None when ``err`` is not a Hub or network error."""
    from huggingface_hub import errors

    org = repo_id.split("/")[0]
    login = "run `hf auth login` or set HF_TOKEN to a token with write access"
    if isinstance(err, errors.OfflineModeIsEnabled):
        return HubError(f"cannot {action}: HF_HUB_OFFLINE=1 is set (offline mode); unset it, or set HF_HUB_OFFLINE=0, "
                        "to publish")
    if isinstance(err, errors.HfHubHTTPError):
        response = getattr(err, "response", None)
        status = getattr(response, "status_code", None)
        said = getattr(err, "server_message", None) or str(err).strip().splitlines()[0]
        if status == 401:
            return HubError(f"cannot {action}: {endpoint} did not accept the credentials (401 Unauthorized): you are "
                            f"not logged in or the token is invalid; {login}")
        if status == 403:
            return HubError(f"cannot {action}: {endpoint} refused it (403 Forbidden: {said}); check that you have "
                            f"write access to {repo_id} (a member of {org!r} with write rights, or your own "
                            f"namespace) and that the token is a write token: {login}")
        if status == 404 or isinstance(err, errors.RepositoryNotFoundError):
            return HubError(f"cannot {action}: {endpoint} answered {status} Not Found: no organization or user "
                            f"{org!r} (check the ORG part of {repo_id}), or {repo_id} is private and the token cannot "
                            f"see it ({login})")
        return HubError(f"cannot {action}: {endpoint} answered {status if status is not None else 'an error'}: {said}")
    if isinstance(err, _transport_errors()):
        return HubError(f"cannot {action}: the Hub at {endpoint} cannot be reached ({type(err).__name__}: {err}); "
                        "check the network, or HF_ENDPOINT if you publish to another Hub server")
    return None


class HfHubClient:
    """:class:`HubClient` over ``huggingface_hub.HfApi`` (token from ``HF_TOKEN`` or ``hf auth login``).

    Failures raise :class:`HubError` with what went wrong (offline mode, no connection, credentials,
    permissions, unknown organization) and what to do, not the HTTP client's traceback.
    """

    def __init__(self, *, endpoint: str | None = None, token: str | None = None) -> None:
        from huggingface_hub import HfApi

        self.api = HfApi(endpoint=endpoint, token=token, library_name="priorlab")

    def _call(self, action: str, repo: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            clear = _explain_write(err, repo, self.api.endpoint, action)
            if clear is None:
                raise
            raise clear from err

    def create_repo(self, repo_id: str, *, private: bool = False) -> None:
        self._call(f"create the model repository {repo_id}", check_repo_id(repo_id), self.api.create_repo, repo_id,
                   repo_type="model", private=private, exist_ok=True)

    def upload_folder(self, folder: Path, repo_id: str, *, revision: str | None = None,
                      commit_message: str = "") -> str:
        if revision is not None:
            self._call(f"create the branch {revision!r} of {repo_id}", repo_id, self.api.create_branch, repo_id,
                       branch=revision, exist_ok=True)
        info = self._call(f"upload {folder} to {repo_id}", repo_id, self.api.upload_folder, folder_path=str(folder),
                          repo_id=repo_id, repo_type="model", revision=revision,
                          commit_message=commit_message or "Upload prior")
        return info.oid


def push_prior(folder: str | Path, repo_id: str, *, client: HubClient, revision: str | None = None,
               private: bool = False, commit_message: str = "") -> str:
    """Publish a prior folder (as written by ``priorlab export``); returns the new commit sha.

    Only ``config.json``, ``model.safetensors`` and ``README.md`` are published, whatever else the folder holds.

    The folder must load strictly before anything is uploaded. The upload is one commit, so a failure
    never leaves part of the folder on the Hub; when the repository was created but the upload then
    failed, the :class:`HubError` says so.

    Raises:
        HubError: the Hub refused or could not be reached (offline mode, network, credentials, permissions).
    """
    from priorlab.zoo.artifact import load_folder

    folder = Path(folder).resolve()  # "." has no name to stage the files under
    check_repo_id(repo_id)
    load_folder(folder)  # refuse to publish what would not load
    if not (folder / CARD_NAME).is_file():
        raise FileNotFoundError(f"{folder / CARD_NAME} not found: publish a model card with the weights "
                                "(`priorlab export` writes one)")
    try:
        client.create_repo(repo_id, private=private)
    except HubError as err:
        raise HubError(f"{err}. Nothing was published") from err
    try:
        # Only the prior's three files: a folder may also hold the user's own files (save_folder keeps them)
        # or a temporary file of an interrupted write, and upload_folder would publish everything in it.
        with tempfile.TemporaryDirectory(prefix="priorlab-push-") as tmp:
            staged = Path(tmp) / folder.name
            staged.mkdir()
            for name in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME):
                shutil.copy2(folder / name, staged / name)
            return client.upload_folder(staged, repo_id, revision=revision,
                                        commit_message=commit_message or f"priorlab: publish {folder.name}")
    except Exception as err:
        # The repository exists now (made by this call, or before it): say so rather than leave it silently empty.
        branch = f" (and perhaps its new branch {revision!r})" if revision not in (None, "main") else ""
        state = (f"the repository {repo_id}{branch} exists (created now, or it existed before) but {folder} was not "
                 "uploaded: no commit was made. Run the same push again once fixed (it reuses the repository), or "
                 "delete the repository on the Hub if it should not exist")
        if isinstance(err, HubError):
            raise HubError(f"{err}. Half done: {state}") from err
        if hasattr(err, "add_note"):  # Python >= 3.11: the traceback of an unexpected error says it too
            err.add_note(f"priorlab: {state}")
        raise
