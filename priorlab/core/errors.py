"""Exceptions that name a mistake in a user's settings, found while a run is under way.

The command line reports a :class:`ConfigError` as one line (exit status 2) wherever it is raised, like the
errors of constructors and of input handling; other exceptions raised by training code keep their traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting that cannot work, e.g. DDP's ``static_graph=True`` with priorlab's losses."""


class OutputExistsError(ConfigError, FileExistsError):
    """An output a run would write exists already; priorlab never replaces it (reported as one line too)."""
