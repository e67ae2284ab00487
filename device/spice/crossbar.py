"""SPICE netlist of an R x C resistive crossbar with wire resistance, and its ngspice run.

The circuit is the one :mod:`crossbar.solver` solves (same node layout, same sign convention):

* ``Vin<i> in<i> 0 DC v_in[i]``: word-line driver ``i``; ``Rsrc<i>`` its output resistance.
* ``Rwl<i>_<j>``: word-line segment in front of cell ``(i, j)`` (the first one joins the driver),
  nodes ``w<i>_<j>``; with ``drive="both_sides"`` a second driver path ``Rsrcr<i>``/``Rwlr<i>``
  feeds the right end from the same source.
* ``Rc<i>_<j> w<i>_<j> b<i>_<j>``: a linear cell (``1/g``); or ``Bc<i>_<j>`` with
  ``I = g*v0*sinh(V/v0)`` for the compact model's read I-V (``cell_v0_v > 0``). ``g = 0`` is an
  open cell (no element).
* ``Rbl<i>_<j>``: bit-line segment below cell ``(i-1, j)``; ``Rbl<R>_<j>`` joins the last cell to
  the sense node ``s<j>``; ``Rsense<j>`` (if any) then ``Vsense<j> x<j> 0 DC 0``, a 0 V source
  whose branch current ``i(vsense<j>)`` is the bit-line current (positive into the sense node).

A zero resistance is never written as a 0-ohm element: the nodes it joins get one name
(``w<i>`` for an ideal word line, ``b<j>`` for an ideal bit line, ``in<i>`` / ``s<j>`` when the
driver / sense path has no resistance at all).

Values are written with 17 significant digits so the deck reproduces float64 inputs exactly.
The deck ends with ``.op`` and ``.end`` and runs under plain ``ngspice -b``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["crossbar_netlist", "run_crossbar", "node_names", "netlist_foreign_reason"]

#: the comment every netlist :func:`crossbar_netlist` writes carries in its first lines
NETLIST_MARK = "* written by reram-cosim"


def netlist_foreign_reason(path: str | Path) -> str | None:
    """Why the existing file ``path`` may not be replaced by a netlist (None: it is one this
    toolkit wrote, :data:`NETLIST_MARK` in its first lines): the output rule of ``--out``."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", errors="replace").splitlines()[:5]
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if any(line.startswith(NETLIST_MARK) for line in head):
        return None
    return "is not a netlist written by reram-cosim"


def _f(x: float) -> str:
    return f"{float(x):.17g}"


def node_names(
    rows: int,
    cols: int,
    *,
    r_wire_row_ohm: float,
    r_wire_col_ohm: float,
    r_source_ohm: float = 0.0,
    r_sense_ohm: float = 0.0,
) -> tuple[list[list[str]], list[list[str]]]:
    """Names of the word-line and bit-line nodes at every crossing: ``(w[i][j], b[i][j])``."""
    ideal_drv = r_source_ohm == 0 and r_wire_row_ohm == 0
    ideal_out = r_sense_ohm == 0 and r_wire_col_ohm == 0
    w = [
        [f"in{i}" if ideal_drv else (f"w{i}_{j}" if r_wire_row_ohm > 0 else f"w{i}") for j in range(cols)]
        for i in range(rows)
    ]
    b = [
        [f"s{j}" if ideal_out else (f"b{i}_{j}" if r_wire_col_ohm > 0 else f"b{j}") for j in range(cols)]
        for i in range(rows)
    ]
    return w, b


def crossbar_netlist(
    g_s: np.ndarray,
    v_in_v: np.ndarray,
    *,
    r_wire_row_ohm: float,
    r_wire_col_ohm: float,
    r_source_ohm: float = 0.0,
    r_sense_ohm: float = 0.0,
    drive: str = "one_side",
    cell_v0_v: float = 0.0,
    title: str = "reram-cosim crossbar",
) -> str:
    """SPICE deck (``.op``) of one tile: ``g_s`` ``(rows, cols)`` siemens, ``v_in_v`` ``(rows,)`` volts.

    Keyword names match :class:`crossbar.solver.CircuitConfig` (``**cfg.to_dict()`` works).
    """
    g = np.asarray(g_s, dtype=np.float64)
    v = np.asarray(v_in_v, dtype=np.float64)
    if g.ndim != 2:
        raise ValueError(f"g_s must have shape (rows, cols), got {g.shape}")
    rows, cols = g.shape
    if v.shape != (rows,):
        raise ValueError(f"v_in_v must have shape ({rows},), got {v.shape}")
    if np.any(g < 0) or not np.all(np.isfinite(g)) or not np.all(np.isfinite(v)):
        raise ValueError("g_s must be finite and >= 0, v_in_v finite")
    for name, val in (("r_wire_row_ohm", r_wire_row_ohm), ("r_wire_col_ohm", r_wire_col_ohm),
                      ("r_source_ohm", r_source_ohm), ("r_sense_ohm", r_sense_ohm)):
        if not val >= 0:
            raise ValueError(f"{name}={val!r} is invalid: must be >= 0")
    if drive not in ("one_side", "both_sides"):
        raise ValueError(f"drive={drive!r} is invalid: must be 'one_side' or 'both_sides'")
    if cell_v0_v < 0:
        raise ValueError(f"cell_v0_v={cell_v0_v!r} is invalid: must be >= 0")
    w, b = node_names(rows, cols, r_wire_row_ohm=r_wire_row_ohm, r_wire_col_ohm=r_wire_col_ohm,
                      r_source_ohm=r_source_ohm, r_sense_ohm=r_sense_ohm)
    out = [
        f"* {title}",
        f"* rows={rows} cols={cols} r_wire_row_ohm={_f(r_wire_row_ohm)} r_wire_col_ohm={_f(r_wire_col_ohm)} "
        f"r_source_ohm={_f(r_source_ohm)} r_sense_ohm={_f(r_sense_ohm)} drive={drive} cell_v0_v={_f(cell_v0_v)}",
        "* written by reram-cosim device.spice.crossbar; bit-line currents are i(vsense<j>)",
    ]
    # drivers
    for i in range(rows):
        out.append(f"Vin{i} in{i} 0 DC {_f(v[i])}")
    sides = [("", 0)] + ([("r", cols - 1)] if drive == "both_sides" else [])
    for i in range(rows):
        for tag, j in sides:
            first = w[i][j]
            if r_source_ohm > 0 and r_wire_row_ohm > 0:
                out.append(f"Rsrc{tag}{i} in{i} d{tag}{i} {_f(r_source_ohm)}")
                out.append(f"Rwl{tag}{i} d{tag}{i} {first} {_f(r_wire_row_ohm)}" if tag else
                           f"Rwl{i}_0 d{i} {first} {_f(r_wire_row_ohm)}")
            elif r_source_ohm > 0:
                out.append(f"Rsrc{tag}{i} in{i} {first} {_f(r_source_ohm)}")
            elif r_wire_row_ohm > 0:
                out.append(f"Rwl{tag}{i} in{i} {first} {_f(r_wire_row_ohm)}" if tag else
                           f"Rwl{i}_0 in{i} {first} {_f(r_wire_row_ohm)}")
    # word-line segments
    if r_wire_row_ohm > 0:
        rw = _f(r_wire_row_ohm)
        for i in range(rows):
            for j in range(1, cols):
                out.append(f"Rwl{i}_{j} {w[i][j - 1]} {w[i][j]} {rw}")
    # cells
    for i in range(rows):
        for j in range(cols):
            if g[i, j] == 0:
                continue
            if cell_v0_v > 0:
                out.append(
                    f"Bc{i}_{j} {w[i][j]} {b[i][j]} I={_f(g[i, j] * cell_v0_v)}*sinh(V({w[i][j]},{b[i][j]})/{_f(cell_v0_v)})"
                )
            else:
                out.append(f"Rc{i}_{j} {w[i][j]} {b[i][j]} {_f(1.0 / g[i, j])}")
    # bit-line segments and sense
    rc = _f(r_wire_col_ohm)
    for j in range(cols):
        if r_wire_col_ohm > 0:
            for i in range(1, rows):
                out.append(f"Rbl{i}_{j} {b[i - 1][j]} {b[i][j]} {rc}")
        last = b[rows - 1][j]
        if r_wire_col_ohm > 0:
            out.append(f"Rbl{rows}_{j} {last} s{j} {rc}")
            last = f"s{j}"
        if r_sense_ohm > 0:
            out.append(f"Rsense{j} {last} x{j} {_f(r_sense_ohm)}")
            out.append(f"Vsense{j} x{j} 0 DC 0")
        else:
            out.append(f"Vsense{j} {last} 0 DC 0")
    out += [".op", ".end", ""]
    return "\n".join(out)


def run_crossbar(
    g_s: np.ndarray,
    v_in_v: np.ndarray,
    *,
    return_nodes: bool = False,
    save_dir: Path | None = None,
    **circuit,
) -> dict[str, np.ndarray | str]:
    """Build the deck, run it in ngspice, return ``{"i_out_a": (cols,), "netlist": str, ...}``.

    With ``return_nodes``: also ``"v_word_v"`` and ``"v_bit_v"`` ``(rows, cols)``. ``circuit``:
    the keyword arguments of :func:`crossbar_netlist`. Raises :class:`~device.spice.runner.SpiceError`.
    """
    from device.spice.runner import run_netlist

    g = np.asarray(g_s, dtype=np.float64)
    deck = crossbar_netlist(g, v_in_v, **circuit)
    res = run_netlist(deck, save_dir=save_dir)
    rows, cols = g.shape
    out: dict[str, np.ndarray | str] = {
        "i_out_a": np.array([res.vectors[f"i(vsense{j})"][0] for j in range(cols)]),
        "netlist": deck,
        "ngspice_version": res.ngspice_version,
    }
    if return_nodes:
        keys = {k: circuit[k] for k in ("r_wire_row_ohm", "r_wire_col_ohm", "r_source_ohm", "r_sense_ohm") if k in circuit}
        w, b = node_names(rows, cols, **keys)
        vin = np.asarray(v_in_v, dtype=np.float64)

        def volt(name: str) -> float:
            if name.startswith("in"):
                return float(vin[int(name[2:])])
            if name.startswith("s") and f"v({name})" not in res.vectors:
                return 0.0
            return float(res.vectors[f"v({name})"][0])

        out["v_word_v"] = np.array([[volt(n) for n in row] for row in w])
        out["v_bit_v"] = np.array([[volt(n) for n in row] for row in b])
    return out
