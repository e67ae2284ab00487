"""``reram-cosim circuit ...``: crossbar netlists, exact / SPICE solves and IR-drop tables.

All values on the command line are SI (ohm, siemens, volts). ``register(subparsers)`` adds the
``circuit`` command group; ``cli/main.py`` maps a :class:`device.errors.UserError` to ``error: ...``
and exit status 2. Every file is written through :mod:`device.io` (temporary file, rename).
"""

from __future__ import annotations

import argparse

import numpy as np

from device.errors import UserError

__all__ = ["register"]


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"expected comma-separated integers, got {text!r}") from None


def _tile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=16, help="word lines (default 16)")
    p.add_argument("--cols", type=int, default=16, help="bit lines (default 16)")
    p.add_argument("--r-wire-ohm", type=float, default=2.5, help="wire resistance per segment, ohm, rows and columns (default 2.5)")
    p.add_argument("--r-source-ohm", type=float, default=0.0, help="word-line driver resistance, ohm (default 0)")
    p.add_argument("--r-sense-ohm", type=float, default=0.0, help="bit-line sense resistance, ohm; 0 = virtual ground")
    p.add_argument("--drive", choices=("one_side", "both_sides"), default="one_side", help="word-line drivers")
    p.add_argument("--g-min-s", type=float, default=1e-6, help="lowest cell conductance, S (default 1e-6 = 1 Mohm)")
    p.add_argument("--g-max-s", type=float, default=1e-4, help="highest cell conductance, S (default 1e-4 = 10 kohm)")
    p.add_argument("--v-read-v", type=float, default=0.2, help="input voltages are U(0, v_read), V (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random tile and inputs")


def _tile(args):
    from crossbar.solver import CircuitConfig

    if args.rows < 1 or args.cols < 1:
        raise UserError(f"--rows/--cols must be >= 1, got {args.rows}x{args.cols}")
    if not 0 < args.g_min_s < args.g_max_s < float("inf"):
        raise UserError("need 0 < --g-min-s < --g-max-s, finite")
    if not 0 <= args.v_read_v < float("inf"):
        raise UserError(f"--v-read-v {args.v_read_v} is invalid: must be finite and >= 0")
    circ = CircuitConfig(r_wire_row_ohm=args.r_wire_ohm, r_wire_col_ohm=args.r_wire_ohm, r_source_ohm=args.r_source_ohm,
                         r_sense_ohm=args.r_sense_ohm, drive=args.drive)
    rng = np.random.default_rng(args.seed)
    g = np.exp(rng.uniform(np.log(args.g_min_s), np.log(args.g_max_s), (args.rows, args.cols)))
    v = rng.uniform(0.0, args.v_read_v, args.rows)
    return g, v, circ


def _cmd_netlist(args) -> int:
    from device.io import atomic_write_text, check_replace
    from device.spice.crossbar import crossbar_netlist, netlist_foreign_reason

    out = check_replace(args.out, netlist_foreign_reason, "netlist")
    g, v, circ = _tile(args)
    deck = crossbar_netlist(g, v, **circ.to_dict(), title=f"reram-cosim circuit netlist seed={args.seed}")
    atomic_write_text(out, deck)
    print(f"wrote {out}: {args.rows}x{args.cols} crossbar, {args.r_wire_ohm:g} ohm/segment, "
          f"{len(deck.splitlines())} lines; bit-line currents are i(vsense<j>); run with `ngspice -b {out}`")
    return 0


def _cmd_solve(args) -> int:
    import time

    from crossbar.solver import ideal_currents, solve
    from device import tables

    tables.check_out(args.out, "circuit_solve")
    g, v, circ = _tile(args)
    t0 = time.perf_counter()
    netlist = ngv = None
    if args.engine == "exact":
        i_out = solve(g, v, circ).i_out_a
    else:
        from device.spice.crossbar import run_crossbar

        res = run_crossbar(g, v, **circ.to_dict())
        i_out, netlist, ngv = res["i_out_a"], res["netlist"], res["ngspice_version"]
    dt = time.perf_counter() - t0
    tables.write_table(
        args.out, kind="circuit_solve", config={"circuit": circ.to_dict(), "engine": args.engine, "seed": args.seed,
                                                "rows": args.rows, "cols": args.cols},
        arrays={
            "g_s": tables.Array(g, "S", ("row", "col"), "cell conductances"),
            "v_in_v": tables.Array(v, "V", ("row",), "word-line input voltages"),
            "i_out_a": tables.Array(i_out, "A", ("col",), "bit-line currents into the sense nodes"),
            "i_ideal_a": tables.Array(ideal_currents(g, v), "A", ("col",), "G.V without wire resistance"),
        },
        attrs={"engine": args.engine, "solve_time_s": dt}, netlist=netlist, ngspice_version=ngv,
    )
    drop = 1 - i_out.sum() / ideal_currents(g, v).sum()
    print(f"wrote {args.out}: {args.rows}x{args.cols}, {args.engine} engine, {dt * 1e3:.1f} ms; "
          f"total bit-line current {i_out.sum() * 1e6:.3f} uA, {100 * drop:.2f} % below ideal G.V")
    return 0


def _cmd_tabulate(args) -> int:
    from crossbar.irdrop import TabulateConfig, format_errors, tabulate
    from device.tables import check_out

    check_out(args.out, "irdrop")
    cfg = TabulateConfig(sizes=_ints(args.sizes), r_wire_ohm=_floats(args.r_wire_ohm), holdout=args.holdout,
                         seed=args.seed, g_min_s=args.g_min_s, g_max_s=args.g_max_s,
                         levels_tables=tuple(p for p in (args.levels_tables or "").split(",") if p),
                         input_densities=_floats(args.input_densities))
    table = tabulate(cfg, args.out, progress=not args.quiet)
    print(f"wrote {args.out}: model '{table.model}'; held-out RMS column-current error, % of the RMS actual column current:")
    print(format_errors(table))
    return 0


def register(subparsers) -> None:
    """Add ``circuit {netlist,solve,tabulate}`` to the ``reram-cosim`` parser."""
    p = subparsers.add_parser("circuit", help="crossbar circuits with wire resistance (IR drop)",
                              description="Crossbar circuits with wire resistance: SPICE decks, exact solves, IR-drop tables. SI units.")
    sub = p.add_subparsers(dest="circuit_cmd", required=True)

    n = sub.add_parser("netlist", help="write the SPICE deck of a random tile (runnable by `ngspice -b`)")
    _tile_args(n)
    n.add_argument("--out", required=True, help="output .cir file")
    n.set_defaults(func=_cmd_netlist)

    s = sub.add_parser("solve", help="solve a random tile; write g_s, v_in_v, i_out_a (HDF5, kind circuit_solve)")
    _tile_args(s)
    s.add_argument("--engine", choices=("exact", "spice"), default="exact", help="exact nodal solver or ngspice")
    s.add_argument("--out", required=True, help="output .h5 file")
    s.set_defaults(func=_cmd_solve)

    t = sub.add_parser("tabulate", help="build the IR-drop table and measure its held-out error (HDF5, kind irdrop)")
    t.add_argument("--sizes", default="64,128", help="square tile sizes, comma-separated (default 64,128)")
    t.add_argument("--r-wire-ohm", default="0.5,1,2.5,5",
                   help="wire resistances per segment of the held-out test, ohm; the largest is the table's limit")
    t.add_argument("--holdout", type=int, default=2, help="held-out tiles per (size, r_wire, level table, code mix)")
    t.add_argument("--g-min-s", type=float, default=5e-7, help="lower end of the accepted conductance window, S")
    t.add_argument("--g-max-s", type=float, default=1.5e-4, help="upper end of the accepted conductance window, S")
    t.add_argument("--levels-tables", default="", help="level tables of the held-out tiles, comma-separated (default: the shipped ones)")
    t.add_argument("--input-densities", default="0.1,0.5,1", help="fractions of driven word lines in the held-out inputs")
    t.add_argument("--seed", type=int, default=0, help="seed")
    t.add_argument("--quiet", action="store_true", help="no progress lines")
    t.add_argument("--out", required=True, help="output .h5 file")
    t.set_defaults(func=_cmd_tabulate)
