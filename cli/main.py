"""The ``reram-cosim`` command line.

The command line is the top layer of the code base: ``cli/`` imports ``device``, ``crossbar``,
``mapping`` and ``nn``, and none of them imports ``cli`` (``tests/test_layers.py``). Each command
group lives in its own module here with a ``register(subparsers)`` function; this module only
assembles them and turns user errors into one line on stderr and a
non-zero exit status. Subcommand modules import their heavy dependencies (torch, transformers,
PySpice) inside the handlers, so ``reram-cosim --help`` stays fast.

Exit status: 0 success; 2 bad input, printed as one ``error: ...`` line (a
:class:`device.errors.UserError`: a config value, a missing or invalid file, an unknown preset or
key, an unwritable output path); 130 interrupted. Any other exception is a bug and shows its
traceback (exit 1). ``--debug`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: modules that contribute subcommands, in the order they appear in ``--help``
COMMAND_MODULES = (
    "cli.device",
    "cli.tables",
    "cli.circuit",
    "cli.crossbar",
    "cli.finetune",
    "cli.evaluate",
    "cli.cost",
    "cli.plot",
)


def build_parser() -> argparse.ArgumentParser:
    from device.io import software_version

    parser = argparse.ArgumentParser(
        prog="reram-cosim",
        description=(
            "ReRAM device-to-BERT co-simulation: filament compact model, multi-level programming, "
            "stuck-at faults, crossbar circuits with IR drop, bit-sliced crossbar tiles, and BERT "
            "on GLUE through simulated crossbars. Physical quantities are in SI units "
            "(ohm, S, V, A, s, m) unless an option says otherwise."
        ),
    )
    parser.add_argument("--version", action="version", version=f"reram-cosim {software_version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of user errors too (bug reports)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def error_line(exc: BaseException) -> str:
    """The one ``error: ...`` line of a user error (a multi-line message is joined)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return f"error: {text or type(exc).__name__}"


def main(argv: list[str] | None = None) -> int:
    from device.errors import UserError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stderr.close()
        return 0
    except UserError as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        print(error_line(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
