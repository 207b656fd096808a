"""``priorlab zoo list|show``: the catalog of published priors and their cards."""

from __future__ import annotations

import json
from pathlib import Path


def build_parser():
    from jsonargparse import ArgumentParser

    p = ArgumentParser(prog="priorlab zoo", description="The catalog of published priors (load them by name).")
    sub = p.add_subcommands(dest="action")
    lst = ArgumentParser(description="print a table of the known priors")
    lst.add_argument("--kind", type=str | None, default=None, help="only 'denoiser' or 'energy' priors")
    lst.add_argument("--json", action="store_true", help="print the catalog as JSON instead of a table")
    sub.add_subcommand("list", lst, help="print a table of the known priors")
    show = ArgumentParser(description="print a prior's model card")
    show.add_argument("name", type=str, help="prior name (see `priorlab zoo list`)")
    sub.add_subcommand("show", show, help="print a prior's model card")
    return p


def _short(text: str) -> str:
    return text.split(" (")[0]


def format_table(entries) -> str:
    """The catalog as an aligned text table."""
    head = ["name", "kind", "architecture", "params", "ch", "training data", "σ₂₅₅ range", "headline", "where",
            "timm name"]
    rows = [[e.name, e.kind, e.architecture, f"{e.params / 1e6:.2f}M" if e.params >= 1e6 else f"{e.params / 1e3:.1f}k",
             str(e.channels), _short(e.data), f"[{e.sigma_range_255[0]:g}, {e.sigma_range_255[1]:g}]", e.headline,
             e.location, e.timm_name or "–"] for e in entries]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _card(entry) -> str:
    from priorlab.zoo.artifact import CARD_NAME
    from priorlab.zoo.hub import HubError
    from priorlab.zoo.priors import resolve_folder

    try:
        folder = resolve_folder(entry, local_files_only=entry.bundled is None)
    except (HubError, FileNotFoundError):
        folder = None
    if folder is not None and (folder / CARD_NAME).is_file():
        return (folder / CARD_NAME).read_text()
    facts = "\n".join(f"- {k}: {v}" for k, v in [
        ("kind", entry.kind), ("architecture", entry.architecture), ("parameters", f"{entry.params:,}"),
        ("channels", entry.channels), ("training data", entry.data), ("noise range", entry.sigma_range_255),
        ("headline", entry.headline), ("where", entry.location), ("weights sha256", entry.sha256)])
    return (f"# {entry.name}\n\n{entry.description}\n\n{facts}\n\n(The full card is in the Hub repository; "
            f"fetch it with `priorlab hub pull {entry.name}`.)\n")


def run(args: list[str]) -> int:
    from priorlab.zoo.catalog import get_prior, list_priors

    cfg = build_parser().parse_args(args)
    if cfg.action == "list":
        entries = list_priors(cfg.list.kind)
        if cfg.list.json:
            print(json.dumps([{**e.__dict__, "location": e.location, "timm_name": e.timm_name} for e in entries],
                             indent=2, ensure_ascii=False))
        elif not entries:
            print("no priors in the catalog" + (f" of kind {cfg.list.kind!r}" if cfg.list.kind else ""))
        else:
            print(format_table(entries))
            print("\nLoad one with priorlab.zoo.load(NAME) or --prior NAME; details: priorlab zoo show NAME")
        return 0
    name = cfg.show.name
    if name.startswith("local-dir:"):  # a folder written by `priorlab export`: its own card
        card = Path(name[len("local-dir:"):]).expanduser() / "README.md"
        if not card.is_file():
            raise FileNotFoundError(f"no model card (README.md) in {card.parent}")
        print(card.read_text(), end="")
        return 0
    if name.startswith("hf-hub:") or name.endswith(".ckpt"):
        raise ValueError(f"`priorlab zoo show` takes a catalog name or local-dir:PATH, not {name!r}; a Hub prior's "
                         "card is its repository's README.md (priorlab hub pull fetches it into the HF cache)")
    print(_card(get_prior(name)), end="")
    return 0
