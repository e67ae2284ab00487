"""device.spice.runner: ngspice shared-mode runs, vector names, errors with the deck saved."""

import numpy as np
import pytest

from device.spice import runner

pytestmark = pytest.mark.spice
if not runner.spice_available():  # skip only when PySpice / libngspice are truly absent
    pytest.skip("PySpice or libngspice not available", allow_module_level=True)


def test_divider_op_and_names():
    res = runner.run_netlist("divider\nV1 in 0 DC 1\nR1 in out 1k\nR2 out 0 3k\n.op\n.end\n")
    assert res.plot_name.startswith("op")
    assert res.ngspice_version == runner.ngspice_version()
    np.testing.assert_allclose(res.vectors["v(out)"], [0.75], rtol=1e-12)
    # current into the + terminal of V1: -1 V / 4 kohm
    np.testing.assert_allclose(res.vectors["i(v1)"], [-0.25e-3], rtol=1e-12)
    assert res.vectors["v1#branch"] is res.vectors["i(v1)"]


def test_tran_has_time():
    res = runner.run_netlist("rc\nV1 a 0 DC 1\nR1 a b 1k\nC1 b 0 1n\n.tran 0.1u 5u\n.end\n")
    t = res.vectors["time"]
    assert t[-1] == pytest.approx(5e-6)
    # v(b) = 1 - exp(-t/RC), RC = 1 us (uic-free: the .op start is the charged state)
    assert np.all(np.isfinite(res.vectors["v(b)"]))


def test_error_saves_netlist(tmp_path):
    deck = "bad\nV1 a 0 DC 1\nR1 a 0 notavalue\n.op\n.end\n"
    with pytest.raises(runner.SpiceError) as err:
        runner.run_netlist(deck, save_dir=tmp_path)
    assert str(tmp_path) in str(err.value)
    assert err.value.netlist_path.read_text().startswith("bad")


def test_nonconvergence_is_spice_error(tmp_path):
    with pytest.raises(runner.SpiceError, match="ngspice"):
        runner.run_netlist("loop\nV1 a 0 DC 1\nV2 a 0 DC 2\n.op\n.end\n", save_dir=tmp_path)


def test_circuits_are_removed():
    # after many runs ngspice holds no circuit: listing a fresh run shows only that deck
    for k in range(50):
        res = runner.run_netlist(f"c{k}\nV1 a 0 DC {k}\nR1 a 0 1k\n.op\n.end\n")
        assert res.vectors["v(a)"][0] == pytest.approx(k)
    ng = runner._instance()
    try:
        ng.exec_command("listing")
    except Exception:  # noqa: BLE001 - PySpice raises because ngspice reports an error
        pass
    assert "no circuit loaded" in ng.stderr.lower()
