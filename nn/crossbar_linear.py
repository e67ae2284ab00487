"""``CrossbarLinear``: an ``nn.Linear`` whose matmul runs on simulated ReRAM crossbar tiles.

Hugging Face models are patched after loading, never forked (STYLE.md section 9):
:func:`patch_model` swaps the ``nn.Linear`` modules whose qualified names match
``SimConfig.target_modules`` and none of ``SimConfig.exclude_modules`` (``re.search``, as PEFT's
``target_modules`` / ``exclude_modules``) for :class:`CrossbarLinear` built by
:meth:`CrossbarLinear.from_linear`. The new module *shares* the original ``weight`` and ``bias``
parameters, so parameter names, ``state_dict`` keys and checkpoints are unchanged.

Life cycle of one patched layer::

    patch_model(model, sim_cfg)            # modules replaced, still digital until programmed
    program_model(model, rng)              # quantize + one draw of variation/faults per layer
    set_simulated(model, True)             # forward = crossbar read (+ bias, digital)
    reprogram_model(model, rng2)           # a new chip: new variation/fault draw, same codes
    set_simulated(model, False)            # forward = F.linear, bit-identical to the original
    unpatch_model(model)                   # plain nn.Linear modules back

Programming draws every layer's seed, in module order, from one ``numpy.random.Generator``, so
one seed gives one chip, bit-identically. Read noise (``crossbar.read_noise_sigma_rel``) is drawn
from a per-layer ``torch.Generator`` seeded from the same generator at programming time.

If a layer's weight changes after programming (training step, ``load_state_dict``), its forward
raises instead of silently reading the old chip: program again.

Hooks for fault protection (used by :mod:`nn.protect` and :mod:`mapping.protection`):

* a per-layer :class:`crossbar.engine.TileLayout` (``CrossbarLinear.layout``), set for a whole
  model from a :class:`mapping.plan.MappingPlan` by :func:`apply_plan`; used at the next
  programming;
* the read function (``CrossbarLinear.read_fn``, :func:`set_read_fn`): any
  ``fn(programmed, x, generator) -> y`` replacing :func:`default_read` (``ProgrammedMatrix.matvec``),
  e.g. a read that votes over the copies a protected plan holds;
* the chip hook (``CrossbarLinear.remap``): ``fn(programmed, base_layout) -> programmed`` run on
  every new chip, e.g. fault-map-aware re-encoding and placement (:class:`mapping.faultaware.FaultAwareMapper`,
  made from ``SimConfig.faultaware`` when that is on and no hook is set).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from nn.sim import SimConfig, build_levels, effective_crossbar, load_irdrop, load_relaxation

__all__ = [
    "CrossbarLinear",
    "ReadFn",
    "default_read",
    "select_modules",
    "patch_model",
    "unpatch_model",
    "crossbar_modules",
    "set_simulated",
    "program_model",
    "reprogram_model",
    "calibrate_model",
    "apply_plan",
    "set_read_fn",
]

#: ``fn(programmed_matrix, x (batch..., in), generator or None) -> (batch..., out)``, no bias
ReadFn = Callable[[Any, torch.Tensor, "torch.Generator | None"], torch.Tensor]


def default_read(programmed: Any, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """The plain crossbar read: :meth:`crossbar.engine.ProgrammedMatrix.matvec`."""
    return programmed.matvec(x, generator=generator)


class CrossbarLinear(nn.Linear):
    """``y = crossbar(W) x + b``: the weight on simulated tiles, the bias added digitally.

    ``weight`` ``(out_features, in_features)`` and ``bias`` ``(out_features,)`` are ordinary
    parameters (shared with the module it was built from). ``simulated`` switches between the
    crossbar read and the exact digital ``F.linear``. Runs where its weight lives (CPU or CUDA).
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
        #: protection hook: a crossbar.engine.TileLayout for the next programming (None = dense)
        self.layout: Any = None
        #: protection hook: how a programmed matrix is read (see ReadFn)
        self.read_fn: ReadFn = default_read
        #: chip hook: fn(programmed, base_layout) -> programmed on every new chip (fault-map-aware mapping)
        self.remap: Any = None
        self._programmed: Any = None
        self._weight_key: tuple | None = None
        self._generator: torch.Generator | None = None
        self._calibrating = False

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
        new.layout = None
        new.read_fn = default_read
        new.remap = None
        new._programmed = None
        new._weight_key = None
        new._generator = None
        new._calibrating = False
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

    # ---- programming ------------------------------------------------------------------------
    @property
    def programmed(self) -> Any:
        """The :class:`crossbar.engine.ProgrammedMatrix` of the current draw (None before)."""
        return self._programmed

    def _key(self) -> tuple:
        w = self.weight
        return (w.data_ptr(), w._version, w.device, tuple(w.shape))

    def program(self, rng: np.random.Generator, *, levels: Any = None, irdrop: Any = None) -> Any:
        """Quantize the weight and program one draw of variation and faults from ``rng``.

        ``levels`` / ``irdrop``: a prebuilt level table / IR-drop table (shared by all layers of
        a model; built from ``sim_cfg`` when None). Returns the programmed matrix.
        """
        from crossbar.engine import program_matrix

        cfg = self.sim_cfg
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"{self.name}: rng must be a numpy.random.Generator")
        levels = build_levels(cfg) if levels is None else levels
        irdrop = load_irdrop(cfg) if irdrop is None else irdrop
        gen_seed = int(rng.integers(2**63))
        pm = program_matrix(
            self.weight.detach(), effective_crossbar(cfg, levels), levels, cfg.faults, rng, layout=self.layout, circuit=cfg.circuit,
            irdrop=irdrop, relaxation=load_relaxation(cfg), dtype=cfg.torch_dtype,
        )
        pm = self._chip_hook(pm)
        self._set_programmed(pm, gen_seed)
        return pm

    def reprogram(self, rng: np.random.Generator, *, levels: Any = None) -> Any:
        """A new draw of variation and faults (a new chip) for the same quantized codes and layout;
        calibrated ranges are reset (see :func:`calibrate_model`)."""
        if self._programmed is None:
            raise ValueError(f"{self.name}: reprogram needs a first program(rng)")
        self._check_fresh()
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"{self.name}: rng must be a numpy.random.Generator")
        gen_seed = int(rng.integers(2**63))
        pm = self._chip_hook(self._programmed.reprogram(rng, levels=levels))
        self._set_programmed(pm, gen_seed)
        return pm

    def _chip_hook(self, pm: Any) -> Any:
        """The new chip through :attr:`remap` (from ``SimConfig.faultaware`` when that is on)."""
        fa = getattr(self.sim_cfg, "faultaware", None)
        if self.remap is None and fa is not None and fa.any:
            from mapping.faultaware import FaultAwareMapper

            self.remap = FaultAwareMapper(fa)
        return pm if self.remap is None else self.remap(pm, self.layout)

    def _set_programmed(self, pm: Any, gen_seed: int) -> None:
        self._programmed = pm
        self._weight_key = self._key()
        self._generator = None
        if pm.cfg.read_noise_sigma_rel > 0:
            g = torch.Generator(device=pm.device)
            g.manual_seed(gen_seed)
            self._generator = g

    def clear(self) -> None:
        """Forget the programmed state (the module then reads digitally until programmed)."""
        self._programmed = None
        self._weight_key = None
        self._generator = None

    def _move(self, device: torch.device) -> None:
        self._programmed = self._programmed.to(device)
        if self._generator is not None:
            g = torch.Generator(device=device)
            g.manual_seed(int(self._generator.initial_seed()))
            self._generator = g
        self._weight_key = self._key()

    def _check_fresh(self) -> None:
        if self._weight_key != self._key():
            raise ValueError(
                f"{self.name}: the weight changed (or moved) since it was programmed; call program_model again"
            )

    # ---- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.simulated:
            return nn.functional.linear(x, self.weight, self.bias)
        pm = self._programmed
        if pm is None:
            raise ValueError(f"{self.name}: simulated=True but the layer is not programmed; call program_model first")
        if self._key() != self._weight_key:
            w, (ver, dev, shape) = self.weight, self._weight_key[1:]
            if w.device != dev and w._version == ver and tuple(w.shape) == shape:
                self._move(w.device)  # the model moved after programming (e.g. .cuda()): same chip
            else:
                self._check_fresh()
            pm = self._programmed
        if self._calibrating:
            pm = pm.calibrate(x.detach())
            self._programmed = pm
        y = self.read_fn(pm, x, self._generator)
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self) -> str:
        state = "simulated" if self.simulated else "digital"
        prog = "programmed" if self._programmed is not None else "not programmed"
        return f"{super().extra_repr()}, {state}, {prog}"


# --------------------------------------------------------------------------------------------
# model-level helpers


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(re.search(p, name) for p in patterns)


def select_modules(model: nn.Module, sim_cfg: SimConfig) -> list[tuple[str, nn.Linear]]:
    """``nn.Linear`` modules (not already patched) matching ``target_modules`` and no
    ``exclude_modules`` pattern, in ``named_modules`` order. Raises ``ValueError`` when none does."""
    out = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and not isinstance(m, CrossbarLinear)
        and _matches(n, sim_cfg.target_modules) and not _matches(n, sim_cfg.exclude_modules)
    ]
    if not out:
        linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        shown = ", ".join(linear[:6]) + (" ..." if len(linear) > 6 else "")
        raise ValueError(
            f"no nn.Linear module matches target_modules={list(sim_cfg.target_modules)} "
            f"(excluding {list(sim_cfg.exclude_modules)}); the model's Linear modules are: {shown or '(none)'}"
        )
    return out


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def patch_model(model: nn.Module, sim_cfg: SimConfig) -> dict[str, CrossbarLinear]:
    """Replace the selected ``nn.Linear`` modules (see :func:`select_modules`) by
    :class:`CrossbarLinear` modules sharing their parameters, in place; return ``{name: module}``.

    The new modules read digitally until :func:`program_model` and :func:`set_simulated`.
    A model patched before must be :func:`unpatch_model`-ed first (one sim config per model).
    """
    if not isinstance(sim_cfg, SimConfig):
        raise ValueError(f"sim_cfg must be a SimConfig, got {type(sim_cfg).__name__}")
    if crossbar_modules(model):
        raise ValueError("the model is already patched; call unpatch_model first")
    out: dict[str, CrossbarLinear] = {}
    for name, mod in select_modules(model, sim_cfg):
        new = CrossbarLinear.from_linear(mod, sim_cfg, name)
        _set_submodule(model, name, new)
        out[name] = new
    return out


def crossbar_modules(model: nn.Module) -> dict[str, CrossbarLinear]:
    """The :class:`CrossbarLinear` modules of ``model``, ``{name: module}`` in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, CrossbarLinear)}


def unpatch_model(model: nn.Module) -> list[str]:
    """Put plain ``nn.Linear`` modules (sharing the parameters) back; return their names."""
    names = list(crossbar_modules(model))
    for name in names:
        _set_submodule(model, name, model.get_submodule(name).to_linear())
    return names


def _require(model: nn.Module) -> dict[str, CrossbarLinear]:
    mods = crossbar_modules(model)
    if not mods:
        raise ValueError("the model has no CrossbarLinear modules; call patch_model first")
    return mods


def set_simulated(model: nn.Module, flag: bool) -> None:
    """Switch every :class:`CrossbarLinear` of ``model`` to crossbar reads (True) or digital (False)."""
    for m in _require(model).values():
        if flag and m.programmed is None:
            raise ValueError(f"{m.name}: not programmed; call program_model before set_simulated(model, True)")
        m.simulated = bool(flag)


def _shared(mods: dict[str, CrossbarLinear], levels: Any, irdrop: Any) -> tuple[Any, Any]:
    """One level table / IR-drop table per distinct sim config (usually one per model)."""
    cfgs = {id(m.sim_cfg): m.sim_cfg for m in mods.values()}
    if len(cfgs) == 1:
        cfg = next(iter(cfgs.values()))
        levels = build_levels(cfg) if levels is None else levels
        irdrop = load_irdrop(cfg) if irdrop is None else irdrop
    return levels, irdrop


@torch.no_grad()
def program_model(model: nn.Module, rng: np.random.Generator, *, levels: Any = None, irdrop: Any = None) -> dict[str, Any]:
    """Program every :class:`CrossbarLinear` (quantize + one draw), in module order, from one
    generator: the same seed gives the same chip bit for bit. Returns ``{name: ProgrammedMatrix}``."""
    mods = _require(model)
    levels, irdrop = _shared(mods, levels, irdrop)
    return {n: m.program(rng, levels=levels, irdrop=irdrop) for n, m in mods.items()}


@torch.no_grad()
def reprogram_model(model: nn.Module, rng: np.random.Generator, *, levels: Any = None) -> dict[str, Any]:
    """A new chip for the same quantized codes: each layer's :meth:`CrossbarLinear.reprogram`
    in module order from one generator (same draw as :func:`program_model` with the same seed)."""
    mods = _require(model)
    return {n: m.reprogram(rng, levels=levels) for n, m in mods.items()}


@torch.no_grad()
def calibrate_model(model: nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """Fix the data-dependent ranges of every layer (``ProgrammedMatrix.calibrate``: dynamic input
    binary points, and the ADC range for ``adc_range="calibrated"``) on one batch of model
    inputs, layer after layer in forward order, each seeing the simulated outputs before it."""
    mods = _require(model)
    if any(m.programmed is None for m in mods.values()):
        raise ValueError("calibrate_model needs a programmed model (program_model first)")
    was = {n: m.simulated for n, m in mods.items()}
    try:
        for m in mods.values():
            m.simulated = True
            m._calibrating = True
        model(**batch)
    finally:
        for n, m in mods.items():
            m._calibrating = False
            m.simulated = was[n]


def apply_plan(model: nn.Module, plan: Any) -> None:
    """Protection hook: use each layer's layout from a :class:`mapping.plan.MappingPlan`
    (``plan.layers[name].layout``) at the next programming. Layers the plan does not name keep
    their layout; a plan layer that is not a patched module is an error."""
    mods = _require(model)
    unknown = sorted(set(plan.layers) - set(mods))
    if unknown:
        raise ValueError(f"the mapping plan names layers that are not on crossbars: {', '.join(unknown[:5])}")
    for name, lp in plan.layers.items():
        m = mods[name]
        if (lp.out_features, lp.in_features) != (m.out_features, m.in_features):
            raise ValueError(
                f"plan layer {name} is {lp.out_features}x{lp.in_features} but the module is {m.out_features}x{m.in_features}"
            )
        m.layout = lp.layout
        m.clear()


def set_read_fn(model: nn.Module, fn: ReadFn | None, names: Iterable[str] | None = None) -> None:
    """Protection hook: read the crossbars of ``names`` (default all) with ``fn`` (None: default)."""
    mods = _require(model)
    for n in names if names is not None else mods:
        if n not in mods:
            raise ValueError(f"{n} is not a CrossbarLinear module of this model")
        mods[n].read_fn = fn if fn is not None else default_read
