"""The cost rows of RESULTS.md "What a mapping costs" (issue 23): MiniLM and BERT-base per
inference at 128 tokens, the seed paper's protections beside spare columns, and the energy of each
point of the accuracy-vs-energy axes (ADC bits 4-8, bits per cell 1-4).

Every row is one ``nn.cost.cost_from_dir`` call (one programmed chip, seed 0, drive statistics of
32 real SST-2 dev sentences padded to 128 tokens), written as ``<out>/<key>.json`` (the report's
``to_dict``); a rerun skips the rows already written, so a killed run resumes. Then it prints the
markdown tables. Models (``~/.cache/reram-cosim/models``): ``minilm-sst2`` (``make demo``),
``minilm-sst2-mag30`` (30 % magnitude row/column pruning of it for the pruned layout, see its
HOW.txt), ``bert-base-shapes`` (``BertConfig()`` defaults, random weights; HOW.txt).

Run: ``PYTHONPATH=$PWD python examples/cost_table.py --glue-dir ../shared/data/glue --out results/cost``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: the chip of every row: the default chip with a 6-bit column ADC
CHIP = ["crossbar.adc_bits=6"]
#: the fault rates of RESULTS.md's protection studies at which spare columns are sized
SPARE_RATES = (1e-4, 1e-3, 3e-3, 1e-2)
M = Path.home() / ".cache" / "reram-cosim" / "models"

#: key -> (label, model, protection method, extra --set, random_init)
ROWS = {
    "minilm": ("MiniLM, unprotected", "minilm-sst2", "unprotected", [], False),
    "minilm_msb": ("MiniLM, embedded MSB copy (1)", "minilm-sst2", "msb", [], False),
    "minilm_reencode": ("MiniLM, fault-map-aware re-encoding at 1e-3", "minilm-sst2", "unprotected",
                        ["faults.rate=1e-3", "faultaware.reencode=true"], False),
    "mag30_prune": ("MiniLM pruned 30 %", "minilm-sst2-mag30", "prune", [], False),
    "mag30_prune_dup": ("MiniLM pruned 30 %, duplication + voting (2 copies)", "minilm-sst2-mag30", "prune+dup", [],
                        False),
    "mag30_prune_dup_msb": ("MiniLM pruned 30 %, duplication + voting + MSB copy", "minilm-sst2-mag30",
                            "prune+dup+msb", [], False),
    "bert_base": ("BERT-base (random weights), unprotected", "bert-base-shapes", "unprotected", [], True),
}
#: the accuracy-vs-energy axes (examples/cost_accuracy_*.json): key -> (axis, value)
AXES = {f"adc{b}": ("crossbar.adc_bits", b) for b in (4, 5, 6, 7, 8)}
AXES.update({f"bpc{b}": ("crossbar.bits_per_cell", b) for b in (1, 2, 3, 4)})


def run_row(key: str, out: Path, glue_dir: str, model: str, method: str, sets: list[str], random_init: bool,
            sentences: int) -> dict:
    path = out / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    from device.io import atomic_write_text
    from mapping.technology import get_tech
    from nn.cost import cost_from_dir
    from nn.protect import method_protection
    from nn.sim import build_sim_config

    tech = get_tech("neurosim_22nm").replace(pipelined=False, tops_per_w_energy_factor=1.0)
    rep = cost_from_dir(str(M / model), build_sim_config("default", CHIP + sets), tech, glue_dir=glue_dir,
                        seq_len=128, n_sentences=sentences, protection=method_protection(method),
                        random_init=random_init)
    rep.meta.update(key=key, method=method, overrides=CHIP + sets)
    d = rep.to_dict()
    atomic_write_text(path, json.dumps(d, indent=1, default=float) + "\n")
    print(f"{key}: {rep.energy_j * 1e6:.4g} uJ {rep.area_m2 * 1e6:.4g} mm2", file=sys.stderr, flush=True)
    return d


def line(label: str, d: dict, base: dict | None = None, area_m2: float | None = None, tiles: str | None = None) -> str:
    a = d["area_m2"] if area_m2 is None else area_m2

    def rel(v, b):
        return f" ({(v / b - 1) * 100:+.1f} %)" if base is not None and b else ""

    return (f"| {label} | {d['energy_j'] * 1e6:.4g}{rel(d['energy_j'], base and base['energy_j'])} | "
            f"{d['latency_s'] * 1e6:.4g} | {a * 1e6:.4g}{rel(a, base and base['area_m2'])} | {d['tops_per_w']:.3g} | "
            f"{tiles or format(d['tiles'], ',')} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--glue-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sentences", type=int, default=32)
    ap.add_argument("--only", choices=("rows", "axes"), default=None)
    ap.add_argument("--studies", default=None,
                    help="directory holding the studies adc/ and bpc/ (examples/cost_accuracy_*.json): "
                         "print accuracy against energy and write the plots there")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {}
    if args.only != "axes":
        for key, (_, model, method, sets, ri) in ROWS.items():
            res[key] = run_row(key, out, args.glue_dir, model, method, sets, ri, args.sentences)
    if args.only != "rows":
        for key, (axis, v) in AXES.items():
            res[key] = run_row(key, out, args.glue_dir, "minilm-sst2", "unprotected", [f"{axis}={v}"], False,
                               args.sentences)
    from nn.cost import spare_columns

    print("| chip | energy uJ | latency us | area mm2 | TOPS/W | tiles |")
    print("|---|---:|---:|---:|---:|---:|")
    if "minilm" in res:
        base = res["minilm"]
        for key, (label, *_) in ROWS.items():
            print(line(label, res[key], None if key in ("minilm", "bert_base") else base))
        # spare columns: extra bit lines per 128-column tile, with the cells, ADCs and shift-and-add
        # that grow with the columns; never read unless they replace a column (energy unchanged)
        ca = base["components"]["area_m2"]
        col_area = ca["array"] + ca["adc"] + ca["shift_add"]
        for rate in SPARE_RATES:
            s = spare_columns(128, 128, rate)
            a = base["area_m2"] + col_area * s / 128
            print(line(f"MiniLM, spare columns for {rate:g} stuck cells ({s} per tile)", base, base, a,
                       f"{base['tiles']:,} x {128 + s}/128 columns"))
    print()
    print("| component | " + " | ".join(k for k in ("minilm", "bert_base") if k in res) + " |")
    for what, unit, scale in (("energy_j", "uJ", 1e6), ("area_m2", "mm2", 1e6)):
        comps = sorted({c for k in ("minilm", "bert_base") if k in res for c in res[k]["components"][what]})
        for c in comps:
            vals = []
            for k in ("minilm", "bert_base"):
                if k in res:
                    v = res[k]["components"][what].get(c, 0.0)
                    tot = sum(res[k]["components"][what].values())
                    vals.append(f"{v * scale:.4g} ({v / tot:.0%})")
            if any(not x.startswith("0 ") for x in vals):
                print(f"| {c} {unit} | " + " | ".join(vals) + " |")
    print()
    print("| axis point | energy uJ | latency us | area mm2 | TOPS/W |")
    print("|---|---:|---:|---:|---:|")
    for key, (axis, v) in AXES.items():
        if key in res:
            d = res[key]
            print(f"| {axis}={v} | {d['energy_j'] * 1e6:.4g} | {d['latency_s'] * 1e6:.4g} | {d['area_m2'] * 1e6:.4g} | "
                  f"{d['tops_per_w']:.3g} |")
    if args.studies:
        accuracy_tables(Path(args.studies), res)
    return 0


def accuracy_tables(root: Path, res: dict) -> None:
    """Accuracy (mean +- sd over chips) beside energy per inference for each study axis."""
    from mapping.cost_plots import plot_accuracy_energy
    from nn.cost import accuracy_vs_energy

    for sub, prefix, axis in (("adc", "adc", "crossbar.adc_bits"), ("bpc", "bpc", "crossbar.bits_per_cell")):
        csv = root / sub / "results.csv"
        if not csv.exists():
            continue
        energies = {v: res[k]["energy_j"] for k, (ax, v) in AXES.items() if ax == axis and k in res}
        points, digital = accuracy_vs_energy(csv, axis, energies)
        print()
        print(f"{axis} (digital {digital:.4f}): | method | value | energy uJ | accuracy (mean +- sd, chips) |")
        for p in points:
            print(f"| {p['method']} | {p['value']} | {p['energy_j'] * 1e6:.4g} | {p['mean']:.4f} +- {p['std']:.4f} ({p['n']}) |")
        print(f"plot: {plot_accuracy_energy(points, root / f'{prefix}_accuracy_energy.png', axis=axis, digital=digital)}")


if __name__ == "__main__":
    sys.exit(main())
