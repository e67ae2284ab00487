"""device.spice.crossbar: the crossbar deck as text (no ngspice needed)."""

import re

import numpy as np
import pytest

from device.spice.crossbar import crossbar_netlist


def _deck(**kw):
    g = np.array([[1e-4, 2e-5, 0.0], [5e-6, 1e-4, 3e-5]])
    v = np.array([0.1, 0.2])
    return crossbar_netlist(g, v, **kw)


def _elements(deck):
    return [ln for ln in deck.splitlines() if ln and not ln.startswith("*") and not ln.startswith(".")]


def test_counts_one_side():
    deck = _deck(r_wire_row_ohm=2.0, r_wire_col_ohm=3.0)
    el = _elements(deck)
    assert sum(e.startswith("Vin") for e in el) == 2
    assert sum(e.startswith("Vsense") for e in el) == 3
    assert sum(e.startswith("Rwl") for e in el) == 2 * 3  # cols segments per word line
    assert sum(e.startswith("Rbl") for e in el) == 3 * 2  # rows segments per bit line
    assert sum(e.startswith("Rc") for e in el) == 5  # g = 0 is an open cell
    assert deck.rstrip().endswith(".end") and "\n.op\n" in deck


def test_values_exact_and_nodes():
    deck = _deck(r_wire_row_ohm=2.0, r_wire_col_ohm=3.0)
    assert "Vin1 in1 0 DC 0.20000000000000001" in deck
    assert float(re.search(r"Rc0_1 w0_1 b0_1 (\S+)", deck).group(1)) == 1.0 / 2e-5
    assert "Rwl0_0 in0 w0_0 2" in deck
    assert "Rbl2_2 b1_2 s2 3" in deck
    assert "Vsense2 s2 0 DC 0" in deck
    r = float(re.search(r"Rc1_0 w1_0 b1_0 (\S+)", deck).group(1))
    assert 1.0 / r == pytest.approx(5e-6, rel=1e-15)


def test_both_sides_source_sense():
    deck = _deck(r_wire_row_ohm=2.0, r_wire_col_ohm=3.0, r_source_ohm=50.0, r_sense_ohm=20.0, drive="both_sides")
    assert "Rsrc0 in0 d0 50" in deck and "Rsrcr0 in0 dr0 50" in deck
    assert "Rwlr0 dr0 w0_2 2" in deck
    assert "Rsense1 s1 x1 20" in deck and "Vsense1 x1 0 DC 0" in deck


def test_zero_resistance_merges_nodes():
    deck = _deck(r_wire_row_ohm=0.0, r_wire_col_ohm=0.0)
    el = _elements(deck)
    assert not any(e.startswith(("Rwl", "Rbl", "Rsrc")) for e in el)
    assert "Rc0_0 in0 s0 10000" in deck  # ideal wires: cell between source and sense node
    assert all(float(e.split()[-1]) > 0 for e in el if e.startswith("R"))


def test_sinh_cells():
    deck = _deck(r_wire_row_ohm=1.0, r_wire_col_ohm=1.0, cell_v0_v=0.25)
    assert "Bc0_0 w0_0 b0_0 I=2.5000000000000001e-05*sinh(V(w0_0,b0_0)/0.25)" in deck


def test_bad_input():
    with pytest.raises(ValueError, match="shape"):
        crossbar_netlist(np.ones((2, 2)), np.ones(3), r_wire_row_ohm=1, r_wire_col_ohm=1)
    with pytest.raises(ValueError, match="r_wire_row_ohm"):
        crossbar_netlist(np.ones((2, 2)), np.ones(2), r_wire_row_ohm=-1, r_wire_col_ohm=1)
