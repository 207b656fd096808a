"""Command line of priorlab: the only place that parses arguments and does the commands' file I/O.

``priorlab fit|validate|test|predict`` is a LightningCLI (:mod:`priorlab.cli.lightning`); every other
command is a module of this package with ``build_parser()`` and ``run(args) -> int``, listed in
:data:`COMMANDS`.
"""

from __future__ import annotations

import importlib
import sys

from priorlab.cli.io import read_image
from priorlab.files import write_image

# command name -> (module under priorlab.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "denoise": ("denoise", "denoise an image file with a trained denoiser"),
    "analyze": ("analyze", "Jacobian, adaptive filters and basis, effective dimensionality, PSNR vs sigma"),
    "sample": ("sample", "draw images from a trained prior (coarse-to-fine sampler, Algorithm 1)"),
    "solve": ("solve", "solve a linear inverse problem with a trained prior (Algorithm 2)"),
    "logp": ("logp", "log-probabilities of images in bits/dim: one-pass energy or probability-flow ODE"),
    "zoo": ("zoo", "list the published priors (zoo list) or print a prior's model card (zoo show NAME)"),
    "export": ("export", "turn a training checkpoint into a publishable prior folder with its model card"),
    "hub": ("hub", "publish a prior folder to the Hub (hub push) or download one into the cache (hub pull)"),
}

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

# Errors a command reports as one line (exit code 2) instead of a traceback: bad input from the user.
USER_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, ValueError, TypeError,
               KeyError)


def usage() -> str:
    lines = ["priorlab: learn, inspect and use image priors through denoisers.", "", "Commands:",
             "  fit | validate | test | predict   Lightning commands configured by YAML, e.g.",
             "                                    priorlab fit --config configs/quickstart.yaml"]
    lines += [f"  {name:<34}{text} (priorlab {name} -h)" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        if not args:
            return 0
    if args and args[0] in COMMANDS:
        module = importlib.import_module(f"priorlab.cli.{COMMANDS[args[0]][0]}")
        try:
            return module.run(args[1:])
        except Exception as err:
            from priorlab.zoo.hub import HubError

            if not isinstance(err, (*USER_ERRORS, HubError)) or _want_traceback():
                raise
            print(f"priorlab {args[0]}: error: {_message(err)}", file=sys.stderr)
            return 2
    if args and args[0] not in LIGHTNING_COMMANDS and not args[0].startswith("-"):
        print(f"priorlab: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    problem = _config_file_problem(args[1:] if args and args[0] in LIGHTNING_COMMANDS else args)
    if problem:
        print(f"priorlab {args[0] if args else 'fit'}: error: {problem}", file=sys.stderr)
        return 2
    from priorlab.cli.lightning import run_lightning_cli

    # args=None lets LightningCLI read sys.argv itself (it warns when given both).
    try:
        run_lightning_cli(None if argv is None else args)
    except Exception as err:
        # A bad model/data argument (e.g. --model.init_args.init_from with an unknown prior) raises a user error in
        # our constructor, which jsonargparse wraps as "Does not validate against any of the Union subtypes" with
        # the real message at the end of a long traceback; bad training data (no images, images smaller than the
        # patches, an unreadable file) raises it from the datamodule's setup: report the user error as one line.
        cause = _user_error_cause(err)
        if cause is None or _want_traceback():
            raise
        print(f"priorlab {args[0] if args else 'fit'}: error: {_message(cause)}", file=sys.stderr)
        return 2
    return 0


def _config_file_problem(args: list[str]) -> str | None:
    """What is wrong with a ``--config`` file that jsonargparse would report only as "Unexpected config: ".

    An empty file, or YAML that is not a mapping (a list, a bare string). Missing files and YAML syntax
    errors are left to jsonargparse, whose messages name the file and the line.
    """
    import yaml

    paths = [a.split("=", 1)[1] for a in args if a.startswith(("--config=", "-c="))]
    paths += [b for a, b in zip(args, args[1:]) if a in ("--config", "-c")]
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                content = yaml.safe_load(f)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if content is None:
            return (f"config file {path} is empty: a config is a YAML mapping of the sections trainer, model, "
                    f"data (see configs/quickstart.yaml, or priorlab fit --print_config > config.yaml)")
        if not isinstance(content, dict):
            return (f"config file {path} holds a YAML {type(content).__name__}, not a mapping of the sections "
                    f"trainer, model, data (see configs/quickstart.yaml)")
    return None


def _message(err: BaseException) -> object:
    return err.args[0] if isinstance(err, KeyError) and err.args else err


# Modules whose exceptions during a Lightning run are about the user's input (arguments, data, files, priors),
# not bugs: the datamodules (folders, images, sizes), prior loading (init_from) and file helpers.
_INPUT_MODULES = ("datamodules", "zoo/priors.py", "zoo/checkpoint.py", "zoo/artifact.py", "zoo/catalog.py",
                  "zoo/hub.py", "files.py")


def _want_traceback() -> bool:
    """``PRIORLAB_TRACEBACK=1``: show the full traceback of a user error too (for bug reports)."""
    import os

    return os.environ.get("PRIORLAB_TRACEBACK", "") not in ("", "0")


def _raised_in(err: BaseException) -> str | None:
    """Path of the priorlab module (relative to the package, '/'-separated) whose code raised ``err``, if any."""
    from pathlib import Path

    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return None
    package = Path(__file__).resolve().parents[1]
    try:
        return Path(tb.tb_frame.f_code.co_filename).resolve().relative_to(package).as_posix()
    except ValueError:
        return None


def _user_error_cause(err: BaseException) -> BaseException | None:
    """The user error that a Lightning command should report as one line, if any.

    Either a user error (FileNotFoundError, KeyError, ValueError...) raised by priorlab under ``err`` (e.g. by a
    constructor that jsonargparse wraps), or ``err`` itself when priorlab's input handling raised it during the
    run (a datamodule finding no image large enough, an unreadable image: an OSError too). Anything else,
    priorlab's own training code included, keeps its traceback: it may be a bug.
    """
    from priorlab.core.errors import ConfigError
    from priorlab.zoo.hub import HubError

    if isinstance(err, ConfigError):  # a setting that cannot work, found during the run
        return err
    where = _raised_in(err)
    if (isinstance(err, (*USER_ERRORS, OSError, HubError)) and where is not None
            and where.startswith(_INPUT_MODULES)):
        return err
    seen, cause = {id(err)}, err.__cause__ or err.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, (*USER_ERRORS, HubError)) and _raised_in(cause) is not None:
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


__all__ = ["COMMANDS", "main", "read_image", "write_image"]
