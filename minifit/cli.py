"""The ``minifit`` command. Each sub-command lives beside the code it drives and
registers itself here through a ``register(subparsers)`` function."""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import traceback

from . import __version__

# module path of each sub-command family; a module exposes register(subparsers)
_COMMAND_MODULES = ("minifit.data.cli", "minifit.distill.cli", "minifit.models.cli", "minifit.weights")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minifit",
        description="Knowledge distillation for thin deep networks (FitNets, KD, adversarial KD) "
                    "on NumPy + Numba.")
    parser.add_argument("--version", action="version", version=f"minifit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in _COMMAND_MODULES:
        importlib.import_module(mod_name).register(sub)
    _add_debug(parser)
    return parser


def _add_debug(parser, top=True):
    """``--debug`` accepted before or after the sub-command (``minifit run F --debug``)."""
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="show the traceback of any error")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_debug(child, top=False)


def main(argv=None) -> int:
    """The error boundary: every error a user can cause or meet is one line naming the
    problem and the fix (exit status 2); anything else is reported as an internal error
    (exit status 3); ``--debug`` shows the traceback either way."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .distill.loop import StopRequested
    from .errors import describe
    try:
        return int(args.func(args) or 0)
    except StopRequested as e:
        resume = getattr(args, "resume_command", None)
        print(f"minifit: {e}." + (f" Continue with: {resume}" if resume else ""), file=sys.stderr)
        return 128 + int(getattr(signal, e.signame))
    except KeyboardInterrupt:
        print("minifit: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- the one boundary
        if args.debug:
            traceback.print_exc()
        message = describe(e)
        if message is not None:
            print(f"minifit: error: {message}", file=sys.stderr)
            return 2
        print(f"minifit: internal error: {type(e).__name__}: {e}\n"
              f"This is a bug in minifit, not in your files or data. Please report it (the minifit issue "
              f"tracker) with the command you ran and the output of the same command with --debug "
              f"({'shown above' if args.debug else 'it shows the traceback'}).", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
