"""The cost model (mapping/cost.py) beside its two anchors, side by side in one run.

1. NeuroSim V1.4's release test (github.com/neurosim/DNN_NeuroSim_V1.4, ``Data/1.4_Release_test.csv``
   with the settings of ``Param.cpp``; CC BY-NC: its published numbers only): VGG-8 on CIFAR-10
   shapes, 22 nm, RRAM 1T1R, 1-bit cells, 4-bit ADC, 128x128 sub-arrays, Ron 100 kOhm, Ron/Roff
   1/17, 8-bit weights and activations, 128 or 64 rows read in parallel.
2. The NeuRRAM macro (Wan et al., Nature 2022) as CiMLoop models it (github.com/mit-emze/cimloop,
   ``wan_nature_2022/_tests.py``): 48 cores of 256x256, 4-bit weights, TOPS/W at (output, input)
   bits (4, 2), (6, 4), (10, 8).

Neither anchor's trained weights or activations are used: conductances are the level means of the
anchor's cells for the stated weight statistics, and inputs are drawn from the stated statistics
(VGG-8: every activation bit 1 with probability 1/2, the maximum-entropy guess; NeuRRAM: CiMLoop's
input histogram). Run: ``PYTHONPATH=$PWD python bench/bench_cost_anchors.py [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from crossbar.config import CrossbarConfig
from crossbar.layout import POS, TileLayout, default_layout
from mapping.conv import ConvGeometry
from mapping.cost import DriveStats, LayerWork, cost_layers, drive_stats, expected_row_conductance, read_columns
from mapping.technology import get_tech

#: NeuroSim V1.4 Data/1.4_Release_test.csv, rows 1 (128 rows in parallel) and 3 (64): areas mm^2,
#: energies uJ (dynamic, per image), latency us (pipeline-system clock cycle per image)
NEUROSIM = {
    128: dict(area=84.7747, area_array=3.60536, area_adc=5.06475, area_accum=15.0639, area_ic=8.29649,
              area_other=52.7443, energy=42.0048, energy_adc=21.612, energy_accum=3.57428, energy_other=16.8186,
              latency=194.225, tops_per_w=23.9369, tops=6.3423),
    64: dict(area=83.073, area_array=3.60536, area_adc=5.06475, area_accum=17.1209, area_ic=8.20239,
             area_other=49.0796, energy=50.1483, energy_adc=31.1206, energy_accum=5.34563, energy_other=13.6821,
             latency=180.168, tops_per_w=20.0615, tops=6.83714),
}
#: CiMLoop wan_nature_2022 _tests.py test_tops: TOPS/W at (output bits, input bits), 2 phases;
#: test_energy_bits_scaling: fJ per op (WL switching, neuron ops and control, input pulses)
NEURRAM = {(4, 2): 40.33412834, (6, 4): 15.95409517, (10, 8): 6.437388185}
NEURRAM_FJ = {(4, 2): (8.270951256, 12.38674172, 3.955661604), (6, 4): (21.75617998, 29.1084171, 11.50740478),
              (10, 8): (50.52466791, 75.85721686, 27.50986693)}
#: VGG-8 (NeuroSim NetWork_VGG8.csv): IFM size, in channels, kernel, out channels
VGG8 = [(32, 3, 3, 128), (32, 128, 3, 128), (16, 128, 3, 256), (16, 256, 3, 256), (8, 256, 3, 512),
        (8, 512, 3, 512), (1, 8192, 1, 1024), (1, 1024, 1, 10)]


def neurosim_vgg8(rows_parallel: int, *, novel_mapping: bool = True, speed_up: int = 8):
    """VGG-8 as the release test maps it (``Param.cpp``: ``novelMapping = true``,
    ``speedUpDegree = 8``, ``pipeline = true``), each from its description in the V1.4 manual:

    * novel mapping (section 5.3): each of the ``k x k`` kernel positions of a convolution is its
      own ``(c_in, c_out)`` sub-matrix on its own sub-arrays, fed the inputs of that position
      (so a 3-channel first layer takes 9 row blocks of 3 rows, where im2col packs 27 rows into
      one); the partial sums of the positions are added by an adder tree (its few adds, one per
      output and position, are not counted);
    * weight duplication (section 5.4): a layer is duplicated to process different inputs at once,
      at most ``speedUpDegree`` times, with "no idle period across all the layers after speed-up":
      the pipeline period is that of the slowest layer at full speed-up,
      ``P = max_l T_l / speed_up``, and each layer gets the copies that bring it to ``P``:
      ``d_l = min(speed_up, ceil(T_l / P))``.
    ``novel_mapping=False, speed_up=1`` is the plain im2col mapping, once."""
    cfg = CrossbarConfig(tile_rows=128, tile_cols=128, bits_per_cell=1, weight_bits=8, mapping="offset",
                         input_bits=8, dac="bit_serial", adc_bits=4, adc_scope="column", adc_kind="sar",
                         adc_columns_per_adc=8)
    tech = get_tech("neurosim_22nm").replace(rows_parallel=rows_parallel)
    g_on = 1 / 100e3
    g_mean = (g_on + g_on / 17) / 2  # 1-bit cells, half of them on
    layers = []  # (layer index, [(name, in, out, mvms)])
    for i, (n, cin, k, cout) in enumerate(VGG8):
        geo = ConvGeometry.make(cin, cout, k, padding=k // 2) if k > 1 else None
        mvms = geo.mvms(n) if geo else 1
        if geo and novel_mapping:
            parts = [(f"layer{i + 1}.k{j}", cin, cout, mvms) for j in range(k * k)]
        else:
            out_f, in_f = geo.matrix_shape if geo else (cout, cin)
            parts = [(f"layer{i + 1}", in_f, out_f, mvms)]
        layers.append(parts)

    def works(dups):
        out = []
        for parts, d in zip(layers, dups):
            for name, in_f, out_f, mvms in parts:
                lay = default_layout(out_f, in_f, cfg)
                g_row = expected_row_conductance(lay, read_columns(lay, copies_read=False), g_mean)
                stats = DriveStats.uniform(in_f, drive_sq=cfg.input_bits * 0.5, active=cfg.input_bits * 0.5)
                out.append(LayerWork(name=name, cfg=cfg, layout=lay, in_features=in_f, out_features=out_f, mvms=mvms,
                                     stats=stats, g_row_s=g_row, duplicates=d))
        return out

    dups = [1] * len(layers)
    if speed_up > 1:
        once = cost_layers(works(dups), tech)
        t = [max(l.latency_s for l in once.layers if l.name.split(".")[0] == f"layer{i + 1}") for i in range(len(layers))]
        period = max(t) / speed_up
        dups = [min(speed_up, max(1, int(np.ceil(ti / period - 1e-9)))) for ti in t]
    return cost_layers(works(dups), tech, meta={"anchor": "NeuroSim V1.4 VGG-8", "rows_parallel": rows_parallel,
                                                "novel_mapping": novel_mapping, "speed_up": speed_up,
                                                "duplicates": dups})


def neurram_macro(out_bits: int, in_bits: int, rng: np.random.Generator):
    """One 256x256 core read by one input vector; 48 cores for TOPS (CiMLoop: r.tops *= 48)."""
    cfg = CrossbarConfig(tile_rows=256, tile_cols=256, bits_per_cell=1, weight_bits=4, input_bits=in_bits,
                         dac="multi_bit", adc_bits=max(out_bits, 2), adc_columns_per_adc=1)
    tech = get_tech("neurram_130nm")
    # every row driven, every column its own channel (one neuron per column; a signed weight
    # is a differential pair of rows, so the 256x256 cells hold 128x256 weights: 65536 ops)
    lay = TileLayout(tile_rows=256, tile_cols=256, row_in=np.arange(256, dtype=np.int32)[None],
                     col_out=np.arange(256, dtype=np.int32)[None], col_slice=np.zeros((1, 256), np.int32),
                     col_role=np.full((1, 256), POS, np.int32), row_copy=np.zeros((1, 256), bool),
                     col_copy=np.zeros((1, 256), bool))
    hist = np.array([5, 5, 6, 6, 7, 7, 8, 8, 8, 7, 7, 6, 6, 5, 5], float)  # CiMLoop INPUTS_HIST, -7..7
    qm = 2 ** (in_bits - 1) - 1
    grid = np.linspace(-7, 7, 15)
    p = np.interp(np.linspace(-7, 7, 2 * qm + 1), grid, hist)
    codes = rng.choice(np.arange(-qm, qm + 1), size=(4096, 256), p=p / p.sum())
    stats = drive_stats(codes, cfg, tech)
    # weights with the same histogram on 4-bit cells (16 levels between Roff 1 MOhm and Ron 250 kOhm):
    # the pair holds |w| on one device and level 0 on the other
    g_on, g_off = 1 / 250e3, 1 / 1e6
    wp = hist / hist.sum()
    mean_level = float((np.abs(grid) * wp).sum()) / 7.0
    g_mean = g_off + (g_on - g_off) * mean_level / 2 + g_off / 2  # (|w| device + level-0 device) / 2
    g_row = expected_row_conductance(lay, read_columns(lay, copies_read=False), g_mean)
    work = LayerWork(name="core", cfg=cfg, layout=lay, in_features=128, out_features=256, mvms=1, stats=stats,
                     g_row_s=g_row)
    return cost_layers([work], tech, meta={"anchor": "NeuRRAM (CiMLoop)", "bits": (out_bits, in_bits)})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    out = {"neurosim": {}, "neurram": {}}
    print("NeuroSim V1.4 release test, VGG-8 (ours / NeuroSim)")
    print(f"{'mapping':>20} {'rows':>5} {'area mm2':>15} {'array':>13} {'ADC':>13} {'accum':>13} {'energy uJ':>15} {'ADC uJ':>13} "
          f"{'accum uJ':>13} {'latency us':>15} {'TOPS/W':>13} {'TOPS':>11}")
    for rows, novel, sp in ((128, False, 1), (64, False, 1), (128, True, 8), (64, True, 8)):
        rep = neurosim_vgg8(rows, novel_mapping=novel, speed_up=sp)
        ref = NEUROSIM[rows]
        ca, ce = rep.components_area_m2, rep.components_energy_j
        ours = dict(area=rep.area_m2 * 1e6, area_array=ca["array"] * 1e6, area_adc=ca["adc"] * 1e6,
                    area_accum=(ca["shift_add"] + ca["accumulation"]) * 1e6, energy=rep.energy_j * 1e6,
                    energy_adc=ce["adc"] * 1e6, energy_accum=(ce["shift_add"] + ce["accumulation"]) * 1e6,
                    latency=rep.period_s * 1e6, tops_per_w=rep.tops_per_w, tops=rep.tops,
                    energy_array=ce["array"] * 1e6, latency_layer_by_layer=rep.latency_s * 1e6)
        mapping = "novel, duplicated" if novel else "im2col, once"
        ours["duplicates"] = rep.meta["duplicates"]
        out["neurosim"].setdefault(mapping, {})[rows] = {"ours": ours, "neurosim": ref}
        f = lambda k: f"{ours[k]:.3g}/{ref[k]:.3g}"  # noqa: E731
        print(f"{mapping:>20} {rows:>5} {f('area'):>15} {f('area_array'):>13} {f('area_adc'):>13} {f('area_accum'):>13} "
              f"{f('energy'):>15} {f('energy_adc'):>13} {f('energy_accum'):>13} {f('latency'):>15} "
              f"{f('tops_per_w'):>13} {f('tops'):>11}")
    for mapping, res in out["neurosim"].items():
        r128, r64 = res[128]["ours"], res[64]["ours"]
        print(f"{mapping}: duplicates per layer {r128['duplicates']}; 128 -> 64 rows in parallel: TOPS/W "
              f"x{r64['tops_per_w'] / r128['tops_per_w']:.3f} (NeuroSim "
              f"x{NEUROSIM[64]['tops_per_w'] / NEUROSIM[128]['tops_per_w']:.3f}), ADC energy x"
              f"{r64['energy_adc'] / r128['energy_adc']:.3f} (NeuroSim x{NEUROSIM[64]['energy_adc'] / NEUROSIM[128]['energy_adc']:.3f})")
    print()
    print("NeuRRAM macro as CiMLoop models it (ours / CiMLoop)")
    print(f"{'(out,in) bits':>14} {'TOPS/W':>15} {'ratio':>6} {'WL fJ/op':>13} {'neuron fJ/op':>15} {'input fJ/op':>13}")
    rng = np.random.default_rng(0)
    for (bo, bi), ref in NEURRAM.items():
        rep = neurram_macro(bo, bi, rng)
        ce = rep.components_energy_j
        fj = lambda *ks: sum(ce[k] for k in ks) / rep.ops * 1e15  # noqa: E731
        wl, neu, inp = fj("gate_lines"), fj("adc", "shift_add"), fj("array", "row_drivers")
        out["neurram"][f"{bo},{bi}"] = {"ours": rep.tops_per_w, "cimloop": ref, "fj_per_op": [wl, neu, inp],
                                        "cimloop_fj_per_op": list(NEURRAM_FJ[(bo, bi)])}
        r = NEURRAM_FJ[(bo, bi)]
        print(f"{str((bo, bi)):>14} {rep.tops_per_w:>7.3g}/{ref:<7.3g} {rep.tops_per_w / ref:>6.3f} "
              f"{wl:>6.3g}/{r[0]:<6.3g} {neu:>7.3g}/{r[1]:<7.3g} {inp:>6.3g}/{r[2]:<6.3g}")
    if args.json:
        from device.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
