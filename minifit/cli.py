"""The ``minifit`` command. Each sub-command lives beside the code it drives and
registers itself here through a ``register(subparsers)`` function."""
from __future__ import annotations

import argparse
import importlib
import sys

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
    return parser


class UserError(Exception):
    """An error the user can fix; printed as one line, exit status 2."""


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, ValueError) as e:
        print(f"minifit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minifit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
