"""The technology a mapped model is costed on: :class:`TechConfig` and its presets.

The cost model (:mod:`mapping.cost`) counts what a chip does per inference (cell reads, row-line
toggles, ADC conversions, digital adds, buffer accesses) from the mapping plan, the crossbar
configuration and real input statistics, and prices each count with the component models and
numbers held here. Every number is a published value or derived from one; the source is given in
the ``#:`` comment of the field and in the preset's docstring (``docs/REFERENCES.md`` gathers them).
Nothing is fitted to the anchors the cost model is checked against (BENCHMARKS.md).

Component models, each used in one place of :mod:`mapping.cost`:

cell array
    ``E = sum over reads of sum_ij G_ij V_i^2 t_read`` with the engine's own programmed
    conductances ``G`` and the DAC's word-line voltages ``V_i`` of real inputs (voltage encoding:
    ``V = v_read_v * code / q_max`` per cycle; pulse-count encoding: ``|digit|`` pulses of
    ``v_read_v``, as NeuRRAM drives its inputs). ``t_read`` is :attr:`TechConfig.t_read_s`, or the
    ADC conversion time when None (a column conducts while it is sensed: the read periphery
    connects one column per ADC at a time).
row and gate lines (DAC / word-line drivers)
    ``E = C V^2`` per line toggle (the charge drawn from the supply over one charge-discharge
    cycle), ``C = c_line_per_cell_f * cells + c_line_driver_f``.
ADC (:attr:`TechConfig.adc_model`)
    ``neurosim_sar``: NeuroSim V1.4's SAR ADC fit (``SarADC.cpp``, 22 nm HP): power per column
    ``(a log2 L + b) + c exp(-k log10 R_col)`` W with ``R_col`` scaled to 0.5 V reads,
    ``E = P (log2 L + 1) t_clock``, latency ``(log2 L + 1) t_clock``, area from its transistor
    counts ``269 + 109 (log2 L - 1)`` NMOS and ``209 + 73 (log2 L - 1)`` PMOS.
    ``walden``: Walden figure of merit, ``E = FOM_W 2^bits`` per conversion, latency the ADC
    kind's clock cycles (:func:`crossbar.adc.conversion_cycles`) (Murmann, "ADC
    Performance Survey 1997-2025", github.com/bmurmann/ADC-survey).
    ``neurram``: NeuRRAM's voltage-mode neuron (Wan et al., Nature 608, 504 (2022)), as CiMLoop
    models it (github.com/mit-emze/cimloop, ``wan_nature_2022``; component energies from its
    component library): per output and MVM ``e_adc_step_j * adc_steps + e_shift_add_step_j *
    adc_steps + e_sample_j * input magnitude bits + e_integrate_step_j * integration steps``,
    where inputs are split into phases (<= 3 magnitude bits: one phase, else two halves),
    integration steps ``sum(2^p - 1)`` and ADC steps ``sum over phases of (output bits - bits of
    the earlier phases)``.
digital (shift-and-add, accumulation, voting, MSB-copy decode, buffers)
    Energies per bit from Horowitz, "Computing's energy problem", ISSCC 2014 (45 nm, 0.9 V: 32-bit
    add 0.1 pJ, 8 kB SRAM 64-bit read 10 pJ), scaled to the node by ``C V^2`` (capacitance
    proportional to the node): ``(node / 45 nm) (vdd / 0.9 V)^2``. Areas from transistor counts
    (28-transistor mirror adder, 24-transistor master-slave flip-flop: Weste & Harris, "CMOS VLSI
    Design", 4th ed.) times the area of one transistor, taken from the 6T SRAM cell (280 F^2 at
    22 nm, NeuroSim V1.4 manual Table V): 280 / 6 F^2.
"""

from __future__ import annotations

from typing import Callable, Literal

from device.config import Config, ConfigError, check_choice, check_int_range, check_positive, check_range, config

__all__ = ["TechConfig", "TECH_PRESETS", "get_tech", "horowitz_scale"]

#: Horowitz, ISSCC 2014, 45 nm at 0.9 V: 32-bit integer add, J (per bit: / 32)
HOROWITZ_ADD32_J = 0.1e-12
#: Horowitz, ISSCC 2014, 45 nm at 0.9 V: 64-bit read of an 8 kB SRAM, J (per bit: / 64)
HOROWITZ_SRAM8KB_READ64_J = 10e-12
#: node and supply of Horowitz's table
HOROWITZ_NODE_M = 45e-9
HOROWITZ_VDD_V = 0.9
#: transistors per bit: mirror full adder and master-slave flip-flop (Weste & Harris, 4th ed.)
ADDER_TRANSISTORS = 28
DFF_TRANSISTORS = 24
#: 6T SRAM cell at 22 nm in F^2 (NeuroSim V1.4 manual, Table V); per transistor: / 6
SRAM6T_F2 = 280.0


def horowitz_scale(node_m: float, vdd_v: float) -> float:
    """``(node / 45 nm) (vdd / 0.9 V)^2``: Horowitz's 45 nm energies at another node and supply
    (dynamic energy ``C V^2`` with capacitance proportional to the feature size)."""
    return (node_m / HOROWITZ_NODE_M) * (vdd_v / HOROWITZ_VDD_V) ** 2


@config
class TechConfig(Config):
    """Technology and circuit parameters the cost model prices a mapped model with (SI units)."""

    #: CMOS node, m (scales the digital energies, see horowitz_scale)
    node_m: float = 22e-9
    #: feature size F of the cell and transistor areas, m
    feature_m: float = 22e-9
    #: logic supply, V
    vdd_v: float = 0.8
    #: digital clock period, s (NeuroSim V1.4 Param.cpp clkFreq = 1 GHz)
    t_clock_s: float = 1e-9
    #: read voltage of the cells for the array energy, V; None = the chip's crossbar.v_read_v
    v_read_v: float | None = None
    #: cell footprint, F^2 (1T1R: 4 F x 12 F, NeuroSim V1.4 Param.cpp)
    cell_area_f2: float = 48.0
    #: how long a cell conducts per read of its column, s; None = the ADC's sampling time (one
    #: clock period for the SAR fit, one bit time for the Walden ADC: the sample-and-hold takes
    #: the column's charge once, then converts the held value)
    t_read_s: float | None = None
    #: how inputs drive the rows: "voltage" (amplitude code / q_max of v_read, or one bit per
    #: cycle bit-serial) or "pulse_count" (|digit| pulses of v_read per phase, NeuRRAM)
    input_encoding: Literal["voltage", "pulse_count"] = "voltage"
    #: row (input) line capacitance per cell it crosses, F (0.2 fF/um wire x the 12 F cell
    #: width at 22 nm: 0.053 fF; the ITRS interconnect value)
    c_row_per_cell_f: float = 0.2e-15 / 1e-6 * 12 * 22e-9
    #: row line driver capacitance, F
    c_row_driver_f: float = 0.0
    #: gate lines switched once per input cycle: "none", "rows" (access-transistor word lines of
    #: the driven rows) or "cols" (one per output column: NeuRRAM's transposed word lines)
    gate_lines: Literal["none", "rows", "cols"] = "none"
    #: gate line capacitance per cell (access transistor gate + coupling), F
    c_gate_per_cell_f: float = 0.0
    #: gate line driver capacitance, F
    c_gate_driver_f: float = 0.0
    #: gate line swing, V
    v_gate_v: float = 0.0
    #: ADC energy / latency / area model: "neurosim_sar", "walden" or "neurram" (module
    #: docstring). The ADC itself (kind, bits, columns per ADC) is the chip's crossbar.adc
    #: (crossbar.adc.AdcConfig); kinds the SAR fit does not describe (ramp, pipeline, cyclic) are
    #: priced by the Walden model
    adc_model: Literal["neurosim_sar", "walden", "neurram"] = "neurosim_sar"
    #: word lines read at once (NeuroSim numRowParallel); None = every row of a tile at once.
    #: Cost only: the engine reads every row of a tile in one conversion.
    rows_parallel: int | None = None
    #: NeuroSim SAR fit, power per column (a log2 L + b): a, W (22 nm HP, SarADC.cpp)
    sar_a_w: float = 0.7213e-6
    #: NeuroSim SAR fit: b, W (22 nm HP)
    sar_b_w: float = 3.3041e-6
    #: NeuroSim SAR fit, column-resistance term c exp(-k log10 R_col): c, W (22 nm HP)
    sar_c_w: float = 0.084273
    #: NeuroSim SAR fit: k (22 nm HP)
    sar_k: float = 2.311
    #: Walden figure of merit, J per conversion step (walden model): median FOMW_hf of the SAR
    #: ADCs with ENOB <= 9 and fs >= 10 MS/s in Murmann's survey (ISSCC + VLSI, 1997-2025): 37 fJ
    adc_fom_j: float = 37e-15
    #: walden model: ADC area, m^2 (median of the same survey rows: 0.026 mm^2)
    a_adc_walden_m2: float = 0.026e-6
    #: neurram model: energy per ADC step (one output bit), J (CiMLoop wan_variable_precision_adc)
    e_adc_step_j: float = 0.3e-12
    #: neurram model: shift-and-add energy per ADC step, J (CiMLoop wan_shift_add)
    e_shift_add_step_j: float = 0.1e-12
    #: neurram model: sample energy per input magnitude bit, J (CiMLoop wan_analog_sample)
    e_sample_j: float = 1.2e-12
    #: neurram model: integrator energy per integration step, J (CiMLoop wan_analog_integrator)
    e_integrate_step_j: float = 0.25e-12
    #: neurram model: time per integration step, s (CiMLoop LATENCY_INTEGRATE)
    t_integrate_step_s: float = 0.27e-6
    #: neurram model: time per ADC step, s (CiMLoop LATENCY_ADC_STEP)
    t_adc_step_s: float = 0.3e-6
    #: neurram model: time between phases incl. sampling, s (CiMLoop LATENCY_INTER_PHASE)
    t_inter_phase_s: float = 0.3e-6
    #: neurram model: magnitude bits above which inputs are read in two phases (CiMLoop: 3)
    max_bits_one_phase: int = 3
    #: neurram model: neuron area (ADC 400 + shift-add 170 + sample 350 + integrator 350 um^2 at
    #: 130 nm, CiMLoop's component library), m^2
    a_neuron_m2: float = 1270e-12
    #: energy of one bit of a digital add (shift-and-add, accumulation, vote compare), J;
    #: None = Horowitz's 32-bit add / 32 at the node and supply (horowitz_scale)
    e_add_bit_j: float | None = None
    #: energy of one bit of buffer (SRAM) access, J; None = Horowitz's 8 kB SRAM read / 64 scaled
    e_buffer_bit_j: float | None = None
    #: area of one transistor with its share of routing, F^2 (6T SRAM cell / 6)
    transistor_area_f2: float = SRAM6T_F2 / 6
    #: SRAM buffer area per bit, F^2 (the 6T cell)
    buffer_area_bit_f2: float = SRAM6T_F2
    #: transistors of one row driver (a flip-flop holding the input bit plus two transmission
    #: gates, as NeuroSim's switch matrix)
    row_driver_transistors: int = DFF_TRANSISTORS + 4
    #: count the activation buffers (input vector read, output vector written per MVM); False for
    #: a bare macro whose inputs arrive from outside (the NeuRRAM anchor)
    buffers: bool = True
    #: reads of the layers overlap (one pipeline stage per layer): throughput from the slowest
    #: layer; False: layer by layer
    pipelined: bool = False
    #: energy multiplier applied to TOPS/W only (NeuroSim's post-layout factor zeta = 1.22 of its
    #: "validated" mode); 1 = none
    tops_per_w_energy_factor: float = 1.0

    def __post_init__(self) -> None:
        check_range("node_m", self.node_m, 1e-9, 1e-6)
        check_range("feature_m", self.feature_m, 1e-9, 1e-6)
        check_range("vdd_v", self.vdd_v, 0.1, 5.0)
        check_positive("t_clock_s", self.t_clock_s)
        if self.v_read_v is not None:
            check_range("v_read_v", self.v_read_v, 0.0, 5.0, lo_open=True)
        check_positive("cell_area_f2", self.cell_area_f2)
        if self.t_read_s is not None:
            check_positive("t_read_s", self.t_read_s)
        check_choice("input_encoding", self.input_encoding, ("voltage", "pulse_count"))
        for f in ("c_row_per_cell_f", "c_row_driver_f", "c_gate_per_cell_f", "c_gate_driver_f"):
            check_range(f, getattr(self, f), 0.0, 1e-9)
        check_choice("gate_lines", self.gate_lines, ("none", "rows", "cols"))
        check_range("v_gate_v", self.v_gate_v, 0.0, 10.0)
        check_choice("adc_model", self.adc_model, ("neurosim_sar", "walden", "neurram"))
        if self.rows_parallel is not None:
            check_int_range("rows_parallel", self.rows_parallel, 1, 4096)
        check_range("sar_k", self.sar_k, 0.0, 10.0)
        for f in ("sar_a_w", "sar_b_w", "sar_c_w", "e_adc_step_j", "e_shift_add_step_j", "e_sample_j",
                  "e_integrate_step_j", "t_inter_phase_s"):
            check_range(f, getattr(self, f), 0.0, 1.0)
        for f in ("adc_fom_j", "a_adc_walden_m2", "t_integrate_step_s", "t_adc_step_s",
                  "a_neuron_m2", "transistor_area_f2", "buffer_area_bit_f2"):
            check_positive(f, getattr(self, f))
        check_int_range("max_bits_one_phase", self.max_bits_one_phase, 1, 16)
        for f in ("e_add_bit_j", "e_buffer_bit_j"):
            v = getattr(self, f)
            if v is not None:
                check_range(f, v, 0.0, 1e-9)
        check_int_range("row_driver_transistors", self.row_driver_transistors, 0, 10_000)
        if not isinstance(self.buffers, bool):
            raise ConfigError(f"buffers={self.buffers!r} is invalid: must be true or false")
        if not isinstance(self.pipelined, bool):
            raise ConfigError(f"pipelined={self.pipelined!r} is invalid: must be true or false")
        check_range("tops_per_w_energy_factor", self.tops_per_w_energy_factor, 1.0, 10.0)

    # ---- derived values -------------------------------------------------------------------
    @property
    def add_bit_j(self) -> float:
        """Energy of one bit of a digital add, J (:attr:`e_add_bit_j` or Horowitz scaled)."""
        if self.e_add_bit_j is not None:
            return self.e_add_bit_j
        return HOROWITZ_ADD32_J / 32 * horowitz_scale(self.node_m, self.vdd_v)

    @property
    def buffer_bit_j(self) -> float:
        """Energy of one bit of buffer access, J (:attr:`e_buffer_bit_j` or Horowitz scaled)."""
        if self.e_buffer_bit_j is not None:
            return self.e_buffer_bit_j
        return HOROWITZ_SRAM8KB_READ64_J / 64 * horowitz_scale(self.node_m, self.vdd_v)

    @property
    def transistor_area_m2(self) -> float:
        return self.transistor_area_f2 * self.feature_m**2

    @property
    def cell_area_m2(self) -> float:
        return self.cell_area_f2 * self.feature_m**2


def _neurosim_22nm() -> TechConfig:
    """NeuroSim V1.4's default RRAM configuration (github.com/neurosim/DNN_NeuroSim_V1.4,
    ``Param.cpp`` and the V1.4 manual; CC BY-NC 4.0: its published numbers, not its code): 22 nm,
    1 GHz clock, 1T1R cells of 4 F x 12 F, read voltage 0.55 V at 22 nm,
    every row of a 128 x 128 sub-array read at once (``numRowParallel``; 64 in its second
    release-test row), the SAR ADC fit of ``SarADC.cpp`` at 22 nm HP (the release test itself uses
    its flash ADC of current-mode sense amplifiers, whose Cadence tables are not published
    outside the code), wire capacitance 0.2 fF/um over the 12 F cell width, post-layout energy
    factor zeta = 1.22 on TOPS/W (its ``validated`` mode), pipelined layers. The crossbar side
    (1-bit cells, 4-bit SAR ADC shared by 8 columns, bit-serial 8-bit inputs, Ron 100 kOhm, on/off
    17) is the chip's
    SimConfig (``bench/bench_cost_anchors.py``)."""
    return TechConfig(v_read_v=0.55, pipelined=True, tops_per_w_energy_factor=1.22)


def _neurram_130nm() -> TechConfig:
    """The NeuRRAM macro (Wan et al., Nature 608, 504 (2022)) as CiMLoop models it
    (github.com/mit-emze/cimloop ``workspace/models/arch/1_macro/wan_nature_2022``, MIT): 130 nm,
    1.8 V (one neuron per column: ``crossbar.adc_columns_per_adc=1``), cells of 125.7 F^2, read voltage 0.5 V with 10 ns read pulses, inputs as pulse
    counts in one or two phases, transposed word lines (one per output) of 1.5 fF access
    transistor + 0.6 fF coupling per cell plus a 48 fF driver, switched at 1.8 V once per input
    bit; one voltage-mode neuron per column (integrator, sampler, variable-precision ADC,
    shift-and-add: the CiMLoop component library's energies and areas at 130 nm), 48 cores of
    256 x 256; no activation buffers (a bare macro, as CiMLoop models it)."""
    return TechConfig(
        node_m=130e-9, feature_m=130e-9, vdd_v=1.8, v_read_v=0.5, cell_area_f2=125.73964497, t_read_s=10e-9,
        input_encoding="pulse_count", c_row_per_cell_f=0.0, gate_lines="cols", c_gate_per_cell_f=2.1e-15,
        c_gate_driver_f=48e-15, v_gate_v=1.8, adc_model="neurram", buffers=False,
    )


def _murmann_22nm() -> TechConfig:
    """The NeuroSim 22 nm technology with a figure-of-merit ADC instead of NeuroSim's SAR fit:
    Walden FOM 37 fJ/step (median of Murmann's survey, see :attr:`TechConfig.adc_fom_j`)."""
    return TechConfig(adc_model="walden")


#: the one registry of technologies; each factory's docstring cites its sources
TECH_PRESETS: dict[str, Callable[[], TechConfig]] = {
    "neurosim_22nm": _neurosim_22nm,
    "neurram_130nm": _neurram_130nm,
    "murmann_22nm": _murmann_22nm,
}


def get_tech(name: str) -> TechConfig:
    """``TECH_PRESETS[name]()``, with a clear error for an unknown name."""
    if name not in TECH_PRESETS:
        raise ConfigError(f"unknown technology {name!r}; known: {', '.join(TECH_PRESETS)}")
    return TECH_PRESETS[name]()
