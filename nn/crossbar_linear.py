"""``CrossbarLinear`` and model patching: a torch model's layers on simulated ReRAM crossbar tiles.

Hugging Face models are patched after loading, never forked (STYLE.md section 9):
:func:`patch_model` swaps the supported modules whose qualified names match
``SimConfig.target_modules`` and none of ``SimConfig.exclude_modules`` (``re.search``, as PEFT's
``target_modules`` / ``exclude_modules``) through the map :data:`CROSSBAR_CLASSES`:

==================  =======================================  ======================================
module              crossbar module                          crossbar matrices
==================  =======================================  ======================================
``nn.Linear``       :class:`CrossbarLinear` (this module)    its ``weight``
``nn.Conv1d/2d``    :mod:`nn.crossbar_conv` (im2col)         one per group, ``(O_g, C_g * K)``
``nn.LSTM/GRU``     :mod:`nn.crossbar_rnn`                   ``weight_ih_l*``, ``weight_hh_l*`` per
                                                             layer and direction, read every step
==================  =======================================  ======================================

The default ``target_modules`` selects the BERT family's encoder Linears; ``target_modules=[".*"]``
selects every supported layer (``exclude_modules`` still applies: by default heads named
``classifier``, ``pooler``, ``pre_classifier`` stay digital). A new module *shares* the
original's parameters, so parameter names, ``state_dict`` keys and checkpoints are unchanged, and
with simulation off its forward is the original module's, bit for bit.

Every crossbar module holds one or more crossbar matrices (:class:`nn.crossbar_matrix.CrossbarMatrix`:
programming state, read, hooks); :func:`crossbar_matrices` lists them by name (a Linear's and a
one-group convolution's matrix is named like the module, a grouped convolution's ``"<name>:g<k>"``,
an RNN's ``"<name>.<parameter>"``). Mapping plans, protections, fault-map-aware mapping and the
placement weights work per matrix.

Life cycle of a patched model::

    patch_model(model, sim_cfg)            # modules replaced, still digital until programmed
    program_model(model, rng)              # quantize + one draw of variation/faults per matrix
    set_simulated(model, True)             # forward = crossbar reads (+ bias, digital)
    reprogram_model(model, rng2)           # a new chip: new variation/fault draw, same codes
    set_simulated(model, False)            # forward = the original modules, bit-identical
    unpatch_model(model)                   # plain modules back

Programming draws every matrix's seed, in module order, from one ``numpy.random.Generator``, so
one seed gives one chip, bit-identically. Read noise (``crossbar.read_noise_sigma_rel``) comes
from a per-matrix noise seed drawn from the same generator at programming time. Inside
:func:`keyed_reads` (what evaluation does for every batch) a token's noise is keyed by its
example's index in the evaluated split, its position, the matrix's noise seed and the matrix's
read count in the forward pass (:class:`crossbar.readkeys.ReadKeys`): it does not depend on the
batch size, the batch mates or the padding. Outside it, each read draws a read seed from a
per-matrix ``torch.Generator`` (seeded with the noise seed) and keys vectors by their content
(:meth:`crossbar.readkeys.ReadKeys.from_content`): every forward is a new read.

If a layer's weight changes after programming (training step, ``load_state_dict``), its forward
raises instead of silently reading the old chip: program again.

Hooks for fault protection (used by :mod:`nn.protect` and :mod:`mapping.protection`), per matrix:

* a :class:`crossbar.engine.TileLayout` (``layout``), set for a whole model from a
  :class:`mapping.plan.MappingPlan` by :func:`apply_plan`; used at the next programming;
* the read function (``read_fn``, :func:`set_read_fn`): any ``fn(programmed, x, generator) -> y``
  replacing :func:`default_read` (``ProgrammedMatrix.matvec``), e.g. a read that votes over the
  copies a protected plan holds;
* the chip hook (``remap``): ``fn(programmed, base_layout) -> programmed`` run on every new chip,
  e.g. fault-map-aware re-encoding and placement (:class:`mapping.faultaware.FaultAwareMapper`,
  made from ``SimConfig.faultaware`` when that is on and no hook is set).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from device.errors import UserError
from nn.crossbar_conv import CrossbarConv1d, CrossbarConv2d
from nn.crossbar_matrix import (
    POSITIONS,
    STREAM_CALIBRATION,
    STREAM_EVAL,
    CrossbarMatrix,
    ReadFn,
    crossbar_extra_repr,
    default_read,
)
from nn.crossbar_rnn import CrossbarGRU, CrossbarLSTM
from nn.sim import SimConfig, build_levels, load_irdrop

__all__ = [
    "CrossbarLinear",
    "CROSSBAR_CLASSES",
    "ReadFn",
    "default_read",
    "select_modules",
    "patch_model",
    "unpatch_model",
    "crossbar_modules",
    "crossbar_matrices",
    "matrix_weights",
    "set_simulated",
    "program_model",
    "reprogram_model",
    "calibrate_model",
    "keyed_reads",
    "STREAM_EVAL",
    "STREAM_CALIBRATION",
    "apply_plan",
    "set_read_fn",
]

class CrossbarLinear(CrossbarMatrix, nn.Linear):
    """``y = crossbar(W) x + b``: the weight on simulated tiles, the bias added digitally.

    ``weight`` ``(out_features, in_features)`` and ``bias`` ``(out_features,)`` are ordinary
    parameters (shared with the module it was built from). ``simulated`` switches between the
    crossbar read and the exact digital ``F.linear``. Runs where its weight lives (CPU or CUDA).
    The layer is its own (one) crossbar matrix (:class:`nn.crossbar_matrix.CrossbarMatrix`).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        sim_cfg: SimConfig | None = None,
        name: str = "",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.sim_cfg = sim_cfg if sim_cfg is not None else SimConfig()
        self.name = name
        #: True: forward reads the crossbar; False: digital F.linear
        self.simulated = False
        self.init_matrix()

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def from_linear(cls, module: nn.Linear, sim_cfg: SimConfig, name: str = "") -> "CrossbarLinear":
        """A crossbar layer sharing ``module``'s ``weight`` / ``bias`` parameters (not copies)."""
        if not isinstance(module, nn.Linear):
            raise ValueError(f"{name or 'module'} is a {type(module).__name__}, not an nn.Linear")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = module.in_features, module.out_features
        new.weight = module.weight
        new.bias = module.bias
        new.sim_cfg = sim_cfg
        new.name = name
        new.simulated = False
        new.init_matrix()
        new.train(module.training)
        return new

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` sharing this module's parameters."""
        lin = nn.Linear.__new__(nn.Linear)
        nn.Module.__init__(lin)
        lin.in_features, lin.out_features = self.in_features, self.out_features
        lin.weight = self.weight
        lin.bias = self.bias
        lin.train(self.training)
        return lin

    to_plain = to_linear

    def matrix_weight(self) -> torch.Tensor:
        return self.weight

    @property
    def parameter(self) -> nn.Parameter:
        """The weight parameter (the layer's one matrix)."""
        return self.weight

    @property
    def matrices(self) -> list["CrossbarLinear"]:
        """The layer's crossbar matrices: itself."""
        return [self]

    # ---- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.simulated:
            if self.observer is None:
                return nn.functional.linear(x, self.weight, self.bias)
            y = self.digital(x)
        else:
            y = self.read(x)
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self) -> str:
        return crossbar_extra_repr(self, super().extra_repr())


# --------------------------------------------------------------------------------------------
# model-level helpers


#: module class -> its crossbar class (exact types: a subclass may have its own forward)
CROSSBAR_CLASSES: dict[type, type] = {
    nn.Linear: CrossbarLinear,
    nn.Conv1d: CrossbarConv1d,
    nn.Conv2d: CrossbarConv2d,
    nn.LSTM: CrossbarLSTM,
    nn.GRU: CrossbarGRU,
}
_CROSSBAR_TYPES = tuple(CROSSBAR_CLASSES.values())
_SUPPORTED = "nn.Linear, Conv1d/Conv2d or LSTM/GRU"


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(re.search(p, name) for p in patterns)


def _supported(m: nn.Module) -> bool:
    """A plain module of a supported class (``nn.Linear`` and its plain subclasses as before;
    the others by exact type)."""
    if isinstance(m, _CROSSBAR_TYPES):
        return False
    return isinstance(m, nn.Linear) or type(m) in CROSSBAR_CLASSES


def select_modules(model: nn.Module, sim_cfg: SimConfig) -> list[tuple[str, nn.Module]]:
    """Supported modules (:data:`CROSSBAR_CLASSES`, not already patched) matching
    ``target_modules`` and no ``exclude_modules`` pattern, in ``named_modules`` order. Raises
    :class:`device.errors.UserError` (a ``ValueError``) when none does: the patterns are the
    user's settings."""
    out = [
        (n, m)
        for n, m in model.named_modules()
        if _supported(m) and _matches(n, sim_cfg.target_modules) and not _matches(n, sim_cfg.exclude_modules)
    ]
    if not out:
        supported = [n for n, m in model.named_modules() if _supported(m)]
        shown = ", ".join(supported[:6]) + (" ..." if len(supported) > 6 else "")
        raise UserError(
            f"no {_SUPPORTED} module matches target_modules={list(sim_cfg.target_modules)} "
            f"(excluding {list(sim_cfg.exclude_modules)}); the model's supported modules are: {shown or '(none)'}"
        )
    return out


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _crossbar_module(mod: nn.Module, sim_cfg: SimConfig, name: str) -> nn.Module:
    if isinstance(mod, nn.Linear):
        return CrossbarLinear.from_linear(mod, sim_cfg, name)
    cls = CROSSBAR_CLASSES[type(mod)]
    if cls in (CrossbarConv1d, CrossbarConv2d):
        return cls.from_conv(mod, sim_cfg, name)
    return cls.from_rnn(mod, sim_cfg, name)


def patch_model(model: nn.Module, sim_cfg: SimConfig) -> dict[str, nn.Module]:
    """Replace the selected modules (see :func:`select_modules`) by their crossbar modules
    (:data:`CROSSBAR_CLASSES`) sharing their parameters, in place; return ``{name: module}``.

    The new modules read digitally until :func:`program_model` and :func:`set_simulated`.
    A model patched before must be :func:`unpatch_model`-ed first (one sim config per model).
    """
    if not isinstance(sim_cfg, SimConfig):
        raise ValueError(f"sim_cfg must be a SimConfig, got {type(sim_cfg).__name__}")
    if crossbar_modules(model):
        raise ValueError("the model is already patched; call unpatch_model first")
    out: dict[str, nn.Module] = {}
    for name, mod in select_modules(model, sim_cfg):
        new = _crossbar_module(mod, sim_cfg, name)
        _set_submodule(model, name, new)
        out[name] = new
    return out


def crossbar_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The crossbar modules of ``model`` (:class:`CrossbarLinear`, crossbar convolutions and
    RNNs), ``{name: module}`` in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, _CROSSBAR_TYPES)}


def crossbar_matrices(model: nn.Module) -> dict[str, CrossbarMatrix]:
    """Every crossbar matrix of ``model`` (:class:`nn.crossbar_matrix.CrossbarMatrix`: a
    ``CrossbarLinear`` itself, a convolution group, an RNN matrix), ``{name: matrix}`` in module
    order: what is programmed, planned, protected and read."""
    return {m.name: m for mod in crossbar_modules(model).values() for m in mod.matrices}


def matrix_weights(model: nn.Module, sim_cfg: SimConfig) -> dict[str, torch.Tensor]:
    """The ``(out, in)`` weight of every matrix :func:`patch_model` would put on crossbars for
    ``sim_cfg`` (patched or not), named as :func:`crossbar_matrices` names them; each a
    parameter or a view of one (writing into it writes the parameter). What hardware-aware
    training (:mod:`nn.hwtrain`) perturbs."""
    from mapping.conv import ConvGeometry, matrix_names

    out: dict[str, torch.Tensor] = {}
    patched = crossbar_modules(model)
    mods = list(patched.items()) if patched else select_modules(model, sim_cfg)
    for name, mod in mods:
        if isinstance(mod, nn.Linear):
            out[name] = mod.weight
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            geo = ConvGeometry.from_module(mod)
            mats = geo.weight_matrices(mod.weight)
            out.update({mn: mats[g] for g, mn in enumerate(matrix_names(name, geo))})
        else:
            out.update({f"{name}.{p}": w for p, w in mod.named_parameters(recurse=False) if p.startswith("weight_")})
    return out


def unpatch_model(model: nn.Module) -> list[str]:
    """Put the plain modules (sharing the parameters) back; return their names."""
    names = list(crossbar_modules(model))
    for name in names:
        _set_submodule(model, name, model.get_submodule(name).to_plain())
    return names


def _require(model: nn.Module) -> dict[str, nn.Module]:
    mods = crossbar_modules(model)
    if not mods:
        raise ValueError("the model has no crossbar modules (CrossbarLinear, ...); call patch_model first")
    return mods


def _require_matrices(model: nn.Module) -> dict[str, CrossbarMatrix]:
    _require(model)
    return crossbar_matrices(model)


def set_simulated(model: nn.Module, flag: bool) -> None:
    """Switch every crossbar module of ``model`` to crossbar reads (True) or digital (False)."""
    mods = _require(model)
    if flag:
        for m in crossbar_matrices(model).values():
            if m.programmed is None:
                raise ValueError(f"{m.name}: not programmed; call program_model before set_simulated(model, True)")
    for m in mods.values():
        m.simulated = bool(flag)


def _shared(mats: dict[str, CrossbarMatrix], levels: Any, irdrop: Any) -> tuple[Any, Any]:
    """One level table / IR-drop table per distinct sim config (usually one per model)."""
    cfgs = {id(m.sim_cfg): m.sim_cfg for m in mats.values()}
    if len(cfgs) == 1:
        cfg = next(iter(cfgs.values()))
        levels = build_levels(cfg) if levels is None else levels
        irdrop = load_irdrop(cfg) if irdrop is None else irdrop
    return levels, irdrop


@torch.no_grad()
def program_model(model: nn.Module, rng: np.random.Generator, *, levels: Any = None, irdrop: Any = None) -> dict[str, Any]:
    """Program every crossbar matrix (quantize + one draw), in module order, from one generator:
    the same seed gives the same chip bit for bit. Returns ``{matrix name: ProgrammedMatrix}``."""
    mats = _require_matrices(model)
    levels, irdrop = _shared(mats, levels, irdrop)
    return {n: m.program(rng, levels=levels, irdrop=irdrop) for n, m in mats.items()}


@torch.no_grad()
def reprogram_model(model: nn.Module, rng: np.random.Generator, *, levels: Any = None) -> dict[str, Any]:
    """A new chip for the same quantized codes: each matrix's ``reprogram`` in module order from
    one generator (same draw as :func:`program_model` with the same seed)."""
    mats = _require_matrices(model)
    return {n: m.reprogram(rng, levels=levels) for n, m in mats.items()}


@torch.no_grad()
def calibrate_model(model: nn.Module, batch: Any, example_ids: Any = None) -> None:
    """Fix the data-dependent ranges of every matrix (``ProgrammedMatrix.calibrate``: dynamic
    input binary points, and the ADC range for ``adc_range="calibrated"``) on one batch of model
    inputs, layer after layer in forward order, each seeing the simulated outputs before it (an
    RNN's recurrent matrix accumulates the ranges of the hidden states of every time step).
    ``batch``: keyword arguments (a dict, e.g. a tokenized batch), or the positional input(s)
    (a tensor or a tuple). ``example_ids``: one id per example of the batch; the calibration
    pass's read noise is then keyed by them (:func:`keyed_reads`, stream
    :data:`STREAM_CALIBRATION`) instead of drawn from the matrices' generators."""
    mods = _require(model)
    mats = crossbar_matrices(model)
    if any(m.programmed is None for m in mats.values()):
        raise ValueError("calibrate_model needs a programmed model (program_model first)")
    was = {n: m.simulated for n, m in mods.items()}
    keyed = (keyed_reads(model, example_ids, stream=STREAM_CALIBRATION) if example_ids is not None
             else contextlib.nullcontext())
    try:
        for m in mods.values():
            m.simulated = True
        for m in mats.values():
            m._calibrating = True
        with keyed:
            if isinstance(batch, dict):
                model(**batch)
            elif isinstance(batch, (tuple, list)):
                model(*batch)
            else:
                model(batch)
    finally:
        for m in mats.values():
            m._calibrating = False
        for n, m in mods.items():
            m.simulated = was[n]


@contextlib.contextmanager
def keyed_reads(model: nn.Module, example_ids: Any, *, stream: int = STREAM_EVAL):
    """Inside the block, the read noise of every crossbar matrix of ``model`` is keyed by
    example: a matrix reading ``n`` input vectors splits them evenly over ``example_ids`` in
    order (example-major, as a ``(batch, seq, in)`` input, a convolution's im2col rows or an RNN
    step's ``(batch, in)`` are), and row ``p`` of example ``e`` gets the key ``e *
    POSITIONS + p`` in the pass ``stream`` (:data:`STREAM_EVAL`, :data:`STREAM_CALIBRATION`) and
    the matrix's ``r``-th read since the block began (:meth:`nn.crossbar_matrix.CrossbarMatrix.noise`,
    :mod:`crossbar.readkeys`). Give each example one id for the whole evaluation (its index in
    the evaluated split): its noise is then the same in any batch, at any batch size and
    padding (padding goes after the real tokens). A no-op for a model without crossbar layers."""
    mats = crossbar_matrices(model)
    ids = torch.as_tensor(np.asarray(example_ids, dtype=np.int64).reshape(-1))
    if ids.numel() and int(ids.min()) < 0:
        raise ValueError("keyed_reads needs example ids >= 0")
    limit = (1 << 62) // POSITIONS
    if ids.numel() and int(ids.max()) >= limit:
        raise ValueError(f"keyed_reads needs example ids below {limit}")
    old = {n: (m._example_ids, m._stream, m._reads) for n, m in mats.items()}
    for m in mats.values():
        m._example_ids, m._stream, m._reads = ids, int(stream), 0
    try:
        yield
    finally:
        for n, m in mats.items():
            m._example_ids, m._stream, m._reads = old[n]


def apply_plan(model: nn.Module, plan: Any) -> None:
    """Protection hook: use each matrix's layout from a :class:`mapping.plan.MappingPlan`
    (``plan.layers[name].layout``) at the next programming. Matrices the plan does not name keep
    their layout; a plan layer that is not a crossbar matrix is an error."""
    mats = _require_matrices(model)
    unknown = sorted(set(plan.layers) - set(mats))
    if unknown:
        raise ValueError(f"the mapping plan names layers that are not on crossbars: {', '.join(unknown[:5])}")
    for name, lp in plan.layers.items():
        m = mats[name]
        if (lp.out_features, lp.in_features) != (m.out_features, m.in_features):
            raise ValueError(
                f"plan layer {name} is {lp.out_features}x{lp.in_features} but the module is {m.out_features}x{m.in_features}"
            )
        m.layout = lp.layout
        m.clear()


def set_read_fn(model: nn.Module, fn: ReadFn | None, names: Iterable[str] | None = None) -> None:
    """Protection hook: read the crossbar matrices ``names`` (default all) with ``fn`` (None: default)."""
    mats = _require_matrices(model)
    for n in names if names is not None else mats:
        if n not in mats:
            raise ValueError(f"{n} is not a crossbar matrix of this model")
        mats[n].read_fn = fn if fn is not None else default_read
