"""``priorlab hub push|pull``: publish a prior folder to the Hub, or fill the HF cache with a prior."""

from __future__ import annotations


def build_parser():
    from jsonargparse import ArgumentParser

    p = ArgumentParser(prog="priorlab hub", description=(
        "Publish priors to the Hugging Face Hub (or the server in HF_ENDPOINT) and fetch them into the standard "
        "HF cache, so that HF_HUB_OFFLINE=1 loads them later without network."))
    sub = p.add_subcommands(dest="action")
    push = ArgumentParser(description="upload a folder written by `priorlab export` as one commit")
    push.add_argument("folder", type=str, help="prior folder (config.json, model.safetensors, README.md)")
    push.add_argument("--repo_id", "--repo-id", dest="repo_id", type=str, required=True, help="ORG/NAME")
    push.add_argument("--revision", type=str | None, default=None, help="branch to commit to (default main)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--message", type=str, default="", help="commit message")
    sub.add_subcommand("push", push, help="publish a prior folder")
    pull = ArgumentParser(description="download a prior into the Hugging Face cache")
    pull.add_argument("spec", type=str, help="catalog name or hf-hub:ORG/REPO[@REVISION]")
    pull.add_argument("--cache_dir", type=str | None, default=None, help="HF cache folder (default HF_HUB_CACHE)")
    pull.add_argument("--force", action="store_true", help="download again even if cached")
    sub.add_subcommand("pull", pull, help="download a prior into the HF cache")
    return p


def run(args: list[str], *, client=None) -> int:
    """Run the command; ``client`` replaces the real Hub client (a :class:`priorlab.zoo.hub.HubClient`)."""
    from priorlab.zoo import hub
    from priorlab.zoo.artifact import WEIGHTS_NAME, sha256_file
    from priorlab.zoo.catalog import get_prior

    cfg = build_parser().parse_args(args)
    if cfg.action == "push":
        c = cfg.push
        commit = hub.push_prior(c.folder, c.repo_id, client=client or hub.HfHubClient(), revision=c.revision,
                                private=c.private, commit_message=c.message)
        digest = sha256_file(f"{c.folder}/{WEIGHTS_NAME}")
        print(f"pushed {c.folder} to {c.repo_id} at commit {commit}")
        print(f"load it with priorlab.zoo.load('hf-hub:{c.repo_id}@{commit}'); to list it in the catalog, pin "
              f"hub_repo={c.repo_id!r}, revision={commit!r}, sha256={digest!r}")
        return 0
    c = cfg.pull
    if c.spec.startswith("hf-hub:"):
        source = hub.parse_hub_source(c.spec)
        folder = hub.download_prior(source.repo_id, revision=source.revision, cache_dir=c.cache_dir,
                                    force_download=c.force)
    else:
        entry = get_prior(c.spec)
        if entry.bundled is not None:
            print(f"{entry.name} is bundled with priorlab ({entry.bundled_path()}); nothing to download")
            return 0
        folder = hub.download_prior(entry.hub_repo, revision=entry.revision, expected_sha256=entry.sha256,
                                    cache_dir=c.cache_dir, force_download=c.force, name=entry.name)
    print(f"cached {folder}")
    return 0
