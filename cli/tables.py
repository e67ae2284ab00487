"""`reram-cosim tables inspect|validate PATH`: look into any table the toolkit writes."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tables",
        help="inspect or validate reram-cosim HDF5 tables",
        description="Inspect or validate the self-describing HDF5 tables written by reram-cosim.",
    )
    sub = p.add_subparsers(dest="tables_cmd", required=True, metavar="{inspect,validate}")
    pi = sub.add_parser("inspect", help="print provenance, groups, arrays, shapes and units")
    pi.add_argument("path", help="HDF5 table file")
    pi.set_defaults(func=_cmd_inspect)
    pv = sub.add_parser(
        "validate",
        help="exit 0 if PATH is a complete table of a known schema, else print why and exit 2",
    )
    pv.add_argument("path", help="HDF5 table file")
    pv.add_argument("--kind", default=None, help="also require this table kind (e.g. levels, faults, irdrop)")
    pv.set_defaults(func=_cmd_validate)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from device import tables

    print(tables.inspect(args.path))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from device import tables

    tables.validate(args.path, kind=args.kind)
    t = tables.read_table(args.path, kind=args.kind)
    print(f"{args.path}: valid {t.kind!r} table (schema {t.attrs['schema_version']}, {len(t.arrays)} arrays)")
    return 0
