"""Name registry of architectures, with timm's conventions (ecosystem.md §3).

Entry points are tiny functions decorated with :func:`register_model`; the function name is the
architecture name. Each is registered in priorlab's registry and, as a thin entry point, in timm's,
so ``timm.create_model("bf_dncnn", in_chans=3)`` builds the same network once ``priorlab.zoo`` is
imported. Duplicate names raise.

timm is not imported for this (importing it costs ~2.4 s, mostly torchvision and torch._dynamo, which every
``priorlab`` command would pay): if timm is already imported, the entry points are registered at once; if not, a
one-shot import hook registers them right after timm's own import finishes, whoever imports it and whenever.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.abc
import importlib.util
import inspect
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

# Keyword arguments timm's create_model passes to every entry point; priorlab's networks ignore them.
_TIMM_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


@dataclass(frozen=True)
class ArchSpec:
    """What the registry knows about an architecture name.

    Attributes:
        name: registry name, e.g. ``bf_dncnn``.
        cls: the ``nn.Module`` class the entry point builds.
        defaults: keyword arguments the entry point passes to ``cls`` (overridable).
        family: architecture family (``dncnn``, ``unet``...).
        description: one line for ``list_models`` tables.
    """

    name: str
    cls: type[nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    family: str = ""
    description: str = ""

    def init_args(self, **overrides: Any) -> dict[str, Any]:
        """All constructor arguments (class defaults, then entry defaults, then overrides)."""
        sig = inspect.signature(self.cls.__init__)
        args = {k: p.default for k, p in sig.parameters.items()
                if k != "self" and p.default is not inspect.Parameter.empty}
        unknown = set(overrides) - set(args)
        if unknown:
            raise TypeError(f"{self.name} got unknown argument(s) {sorted(unknown)}; "
                            f"valid arguments: {sorted(args)}")
        args.update(self.defaults)
        args.update(overrides)
        return args


_REGISTRY: dict[str, ArchSpec] = {}


_PENDING_TIMM: list[Callable[..., nn.Module]] = []  # entry points waiting for timm to be imported
_TIMM_LOCK = threading.Lock()


def _flush_timm() -> None:
    """Register the pending entry points in timm's registry (timm is imported by now)."""
    import timm
    from timm.models import register_model as timm_register

    with _TIMM_LOCK:
        pending, _PENDING_TIMM[:] = list(_PENDING_TIMM), []
    for fn in pending:
        if timm.is_model(fn.__name__):
            raise ValueError(f"timm already has a model named {fn.__name__!r}; pick another priorlab name")
        timm_register(fn)


class _AfterTimmImport(importlib.abc.MetaPathFinder):
    """Import hook: when ``timm`` is imported, run :func:`_flush_timm` right after its module has executed."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)  # let the other finders find timm (and not come back here meanwhile)
        try:
            spec = importlib.util.find_spec("timm")
        finally:
            sys.meta_path.insert(0, self)  # a find_spec without import (an availability check) keeps the hook
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, exec_module = spec.loader, spec.loader.exec_module

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            _flush_timm()

        loader.exec_module = exec_then_register
        return spec


_TIMM_HOOK = _AfterTimmImport()


def _register_in_timm(fn: Callable[..., nn.Module]) -> None:
    with _TIMM_LOCK:
        _PENDING_TIMM.append(fn)
    if "timm" in sys.modules and hasattr(sys.modules["timm"], "create_model"):
        _flush_timm()
    elif _TIMM_HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _TIMM_HOOK)


def register_model(cls: type[nn.Module], *, family: str, description: str = "", **defaults: Any,
                   ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register an architecture entry point under its function name.

    The decorated function's body is not used: the entry point is rebuilt from ``cls`` and
    ``defaults`` so that the registry can always report a model's full constructor arguments.

    Raises:
        ValueError: the name is already registered (here or in timm).
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        spec = ArchSpec(name=name, cls=cls, defaults=dict(defaults), family=family,
                        description=description or (fn.__doc__ or "").strip().split("\n")[0])
        spec.init_args()  # fail at import time on defaults the class does not accept

        def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
            cfg = kwargs.pop("pretrained_cfg", None)
            for k in _TIMM_KWARGS:
                kwargs.pop(k, None)
            if pretrained:
                return _pretrained(name, cfg, kwargs)
            return _build(spec, kwargs)

        entry.__name__ = name
        entry.__qualname__ = name
        entry.__module__ = fn.__module__
        entry.__doc__ = fn.__doc__
        _REGISTRY[name] = spec
        _register_in_timm(entry)
        return entry

    return decorator


def _build(spec: ArchSpec, overrides: dict[str, Any]) -> nn.Module:
    args = spec.init_args(**overrides)
    model = spec.cls(**args)
    # Plain JSON that rebuilds the network: what checkpoints and published config.json files carry.
    model.arch_config = {"architecture": spec.name, "init_args": args}
    return model


def _pretrained(name: str, cfg: Any, overrides: dict[str, Any]) -> nn.Module:
    """Weights of a catalog prior for ``timm.create_model("<name>[.<tag>]", pretrained=True)``."""
    from priorlab.zoo.catalog import find_timm_tag
    from priorlab.zoo.priors import load

    # timm passes the tag of "arch.tag" as pretrained_cfg (a string), or a config object with .tag.
    tag = cfg if isinstance(cfg, str) or cfg is None else getattr(cfg, "tag", None) or (
        cfg.get("tag") if isinstance(cfg, dict) else None)
    entry = find_timm_tag(name, tag, channels=overrides.get("in_chans", 1))
    net = load(entry.name)
    changed = {k: v for k, v in overrides.items() if net.arch_config["init_args"].get(k) != v}
    if changed:
        raise ValueError(f"pretrained {entry.timm_name} was trained with {net.arch_config['init_args']}; "
                         f"it cannot be built with {changed}")
    return net


def _resolve(name: str) -> ArchSpec:
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    if "/" in name or ":" in name:
        raise ValueError(f"{name!r} is not an architecture name; architecture names contain no '/' or ':'")
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}.{hint} Known models: {', '.join(sorted(_REGISTRY))}") from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered architecture (randomly initialized).

    Args:
        name: registry name, e.g. ``bf_dncnn`` (see :func:`list_models`).
        **kwargs: constructor arguments overriding the entry point's defaults (e.g. ``in_chans=3``).

    Returns:
        The network, in training mode, with ``arch_config`` = ``{"architecture", "init_args"}``.
    """
    return _build(_resolve(name), kwargs)


def list_models(filter: str = "*", *, family: str | None = None) -> list[str]:
    """Registered architecture names matching an fnmatch pattern (e.g. ``"*unet*"``), sorted."""
    names = [n for n, s in _REGISTRY.items() if family is None or s.family == family]
    return sorted(n for n in names if fnmatch.fnmatchcase(n, filter))


def get_spec(name: str) -> ArchSpec:
    """The registry entry of an architecture name."""
    return _resolve(name)


def build_from_config(arch_config: dict[str, Any]) -> nn.Module:
    """Rebuild a network from its ``arch_config`` (``{"architecture": name, "init_args": {...}}``)."""
    try:
        name, args = arch_config["architecture"], dict(arch_config.get("init_args", {}))
    except (TypeError, KeyError):
        raise ValueError(f"not an architecture config (needs 'architecture' and 'init_args'): {arch_config!r}"
                         ) from None
    return create_model(name, **args)
