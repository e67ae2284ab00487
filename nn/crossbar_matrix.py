"""One weight matrix on simulated crossbar tiles: its programming state, its read, and its hooks.

Every crossbar module of :mod:`nn.crossbar_linear` holds its weights as one or more *crossbar
matrices* ``(out_features, in_features)``: a ``CrossbarLinear`` is one (its ``weight``), a
convolution one per group (im2col, :mod:`mapping.conv`), an LSTM / GRU two per layer and
direction (``weight_ih_l*`` and ``weight_hh_l*``). :class:`CrossbarMatrix` is what they share:

* programming: :meth:`CrossbarMatrix.program` quantizes the matrix and programs one draw of a chip
  through :func:`crossbar.engine.program_matrix` (``SimConfig``'s level table, faults, circuit,
  IR-drop and relaxation models), :meth:`~CrossbarMatrix.reprogram` redraws the chip for the
  same codes; both run the chip hook :attr:`~CrossbarMatrix.remap` (fault-map-aware mapping);
* the read, :meth:`CrossbarMatrix.read` ``(batch..., in) -> (batch..., out)`` without bias: the
  protection hook :attr:`~CrossbarMatrix.read_fn` on the programmed matrix, its read noise keyed
  by example inside :func:`nn.crossbar_linear.keyed_reads` (else from the matrix's own seeded
  generator, :meth:`CrossbarMatrix.noise`), the calibration of data-dependent ranges while a model is
  being calibrated, and the check that the weight did not change since programming;
* the protection hook :attr:`~CrossbarMatrix.layout` (a :class:`crossbar.engine.TileLayout` for
  the next programming, from a :class:`mapping.plan.MappingPlan`);
* :attr:`~CrossbarMatrix.observer`: ``fn(matrix, x, y)`` called on every digital product while
  set (the modules then compute digitally through their matrices, e.g. a convolution as im2col),
  so that :mod:`nn.sensitivity` sees each matrix's own inputs and outputs.

:class:`MatrixSlot` is a crossbar matrix that views a parameter of a module holding several (a
convolution group, an LSTM matrix); ``CrossbarLinear`` inherits :class:`CrossbarMatrix` itself.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from nn.sim import SimConfig, build_levels, effective_crossbar, load_irdrop, load_relaxation

__all__ = ["ReadFn", "Observer", "default_read", "CrossbarMatrix", "MatrixSlot", "rebuild_module", "crossbar_extra_repr", "POSITIONS",
           "KEY_BLOCK", "STREAM_EVAL", "STREAM_CALIBRATION"]

#: ``fn(programmed_matrix, x (batch..., in), noise) -> (batch..., out)``, no bias; ``noise``: a
#: ``crossbar.readkeys.ReadKeys``, a ``torch.Generator`` or None, as ``ProgrammedMatrix.matvec`` takes
ReadFn = Callable[[Any, torch.Tensor, Any], torch.Tensor]

#: rows per example in a read key (``example * POSITIONS + position``)
POSITIONS = 1 << 20
#: keys per generator seeding (16 token positions of one sentence: GLUE sentences of 20-60
#: tokens take 2-4 seedings, bench/bench_reliab.py; part of the key scheme, see NUMERICS)
KEY_BLOCK = 16
#: the passes whose reads are keyed apart: evaluation and calibration
STREAM_EVAL, STREAM_CALIBRATION = 0, 1
#: ``fn(matrix, x (rows, in), y (rows, out))``: a digital product seen by :mod:`nn.sensitivity`
Observer = Callable[[Any, torch.Tensor, torch.Tensor], None]


def default_read(programmed: Any, x: torch.Tensor, generator: Any) -> torch.Tensor:
    """The plain crossbar read: :meth:`crossbar.engine.ProgrammedMatrix.matvec`."""
    return programmed.matvec(x, generator=generator)


class CrossbarMatrix:
    """The programming state and read of one crossbar matrix (module docstring).

    Subclasses provide :meth:`matrix_weight` (the current ``(out, in)`` weight, a parameter or a
    view of one), ``name``, ``sim_cfg``, ``out_features`` and ``in_features``, and call
    :meth:`init_matrix` once.
    """

    name: str
    sim_cfg: SimConfig
    out_features: int
    in_features: int

    def init_matrix(self) -> None:
        #: protection hook: a crossbar.engine.TileLayout for the next programming (None = dense)
        self.layout: Any = None
        #: protection hook: how a programmed matrix is read (see ReadFn)
        self.read_fn: ReadFn = default_read
        #: chip hook: fn(programmed, base_layout) -> programmed on every new chip (fault-map-aware mapping)
        self.remap: Any = None
        #: sensitivity hook: fn(matrix, x, y) on every digital product while set (see Observer)
        self.observer: Observer | None = None
        self._programmed: Any = None
        self._weight_key: tuple | None = None
        self._generator: torch.Generator | None = None
        self._noise_seed: int | None = None
        #: keyed reads (nn.crossbar_linear.keyed_reads): example ids of the batch, pass, reads so far
        self._example_ids: torch.Tensor | None = None
        self._stream = STREAM_EVAL
        self._reads = 0
        self._calibrating = False

    def matrix_weight(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def parameter(self) -> torch.nn.Parameter:
        """The ``nn.Parameter`` holding this matrix (the matrix itself, or a tensor it views)."""
        raise NotImplementedError

    def as_matrix(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` shaped like :attr:`parameter` (its gradient, say) as this matrix ``(out, in)``."""
        return t

    def weight_grad(self) -> torch.Tensor | None:
        """The gradient of the loss with respect to this matrix (a view of the parameter's), or None."""
        g = self.parameter.grad
        return None if g is None else self.as_matrix(g)

    # ---- programming ------------------------------------------------------------------------
    @property
    def programmed(self) -> Any:
        """The :class:`crossbar.engine.ProgrammedMatrix` of the current draw (None before)."""
        return self._programmed

    def _key(self) -> tuple:
        w = self.matrix_weight()
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
            self.matrix_weight().detach(), effective_crossbar(cfg, levels), levels, cfg.faults, rng, layout=self.layout,
            circuit=cfg.circuit, irdrop=irdrop, relaxation=load_relaxation(cfg), dtype=cfg.torch_dtype,
            read_noise="crossbar",  # resolved by effective_crossbar
        )
        pm = self._chip_hook(pm)
        self._set_programmed(pm, gen_seed)
        return pm

    def reprogram(self, rng: np.random.Generator, *, levels: Any = None) -> Any:
        """A new draw of variation and faults (a new chip) for the same quantized codes and layout;
        calibrated ranges are reset (see :func:`nn.crossbar_linear.calibrate_model`)."""
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
        self._noise_seed = None
        if pm.cfg.read_noise_sigma_rel > 0:
            g = torch.Generator(device=pm.device)
            g.manual_seed(gen_seed)
            self._generator = g
            self._noise_seed = gen_seed

    def clear(self) -> None:
        """Forget the programmed state (the matrix then reads digitally until programmed)."""
        self._programmed = None
        self._weight_key = None
        self._generator = None
        self._noise_seed = None

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

    # ---- read ---------------------------------------------------------------------------------
    def read(self, x: torch.Tensor) -> torch.Tensor:
        """The crossbar read of ``x`` ``(batch..., in_features)`` -> ``(batch..., out_features)``,
        no bias (see the module docstring)."""
        pm = self._programmed
        if pm is None:
            raise ValueError(f"{self.name}: simulated=True but the layer is not programmed; call program_model first")
        if self._key() != self._weight_key:
            w, (ver, dev, shape) = self.matrix_weight(), self._weight_key[1:]
            if w.device != dev and w._version == ver and tuple(w.shape) == shape:
                self._move(w.device)  # the model moved after programming (e.g. .cuda()): same chip
            else:
                self._check_fresh()
            pm = self._programmed
        if self._calibrating:
            pm = pm.calibrate(x.detach())
            self._programmed = pm
        return self.read_fn(pm, x, self.noise(x))

    def noise(self, x: torch.Tensor) -> Any:
        """Where the read noise of ``x`` ``(rows..., in)`` comes from: inside
        :func:`nn.crossbar_linear.keyed_reads` a :class:`crossbar.readkeys.ReadKeys` (the ``n``
        rows split evenly over the batch's examples in order, example-major as a ``(batch, seq,
        in)`` input or a convolution's im2col rows are; row ``p`` of example ``e`` has key ``e *
        POSITIONS + p``; the seed mixes the matrix's noise seed, the pass and this matrix's read
        count since the block began), else the matrix's generator; None without read noise."""
        if self._generator is None or self._example_ids is None:
            return self._generator
        from crossbar.readkeys import ReadKeys, mix64

        ids = self._example_ids
        n = x.numel() // x.shape[-1] if x.ndim else 0
        if ids.numel() == 0 or n % ids.numel():
            raise ValueError(f"{self.name}: keyed_reads was given {ids.numel()} example ids but the matrix reads "
                             f"{n} input vectors (shape {tuple(x.shape)}), not a whole number per example")
        per = n // ids.numel()
        if per > POSITIONS:
            raise ValueError(f"{self.name}: {per} input vectors per example exceed the read keys' {POSITIONS}")
        rows = (ids.view(-1, 1) * POSITIONS + torch.arange(per, dtype=torch.int64).view(1, -1)).reshape(-1)
        seed = mix64(self._noise_seed, self._stream, self._reads)
        self._reads += 1
        return ReadKeys(seed=seed, rows=rows, block=KEY_BLOCK)

    def digital(self, x: torch.Tensor) -> torch.Tensor:
        """The exact digital product ``x @ W.T`` (no bias), shown to :attr:`observer` when set."""
        y = torch.nn.functional.linear(x, self.matrix_weight())
        if self.observer is not None:
            self.observer(self, x, y)
        return y


class MatrixSlot(CrossbarMatrix):
    """A crossbar matrix that views (part of) a parameter of a multi-matrix module.

    ``owner``: the module; ``param_name``: its parameter (looked up on every use, so a parameter
    replaced on the module is followed); ``view``: ``fn(parameter) -> (out, in)`` tensor view of
    it (default: the parameter itself). ``weight`` is that view.
    """

    def __init__(self, name: str, sim_cfg: SimConfig, owner: torch.nn.Module, param_name: str,
                 view: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.name = name
        self.sim_cfg = sim_cfg
        self.owner = owner
        self.param_name = param_name
        self._view = view
        w = self.matrix_weight()
        if w.ndim != 2:
            raise ValueError(f"{name}: a crossbar matrix must be 2-D, got {tuple(w.shape)}")
        self.out_features, self.in_features = (int(s) for s in w.shape)
        self.init_matrix()

    @property
    def parameter(self) -> torch.nn.Parameter:
        """The owner's parameter this matrix views."""
        return getattr(self.owner, self.param_name)

    def as_matrix(self, t: torch.Tensor) -> torch.Tensor:
        return t if self._view is None else self._view(t)

    def matrix_weight(self) -> torch.Tensor:
        return self.as_matrix(self.parameter)

    @property
    def weight(self) -> torch.Tensor:
        """The ``(out_features, in_features)`` weight (a view of :attr:`parameter`)."""
        return self.matrix_weight()

    def __repr__(self) -> str:
        prog = "programmed" if self._programmed is not None else "not programmed"
        return f"MatrixSlot({self.name}, {self.out_features}x{self.in_features}, {prog})"


def crossbar_extra_repr(module: torch.nn.Module, plain: str) -> str:
    """The ``extra_repr`` of every crossbar module: its plain module's (``plain``), then whether it
    reads simulated or digital and whether all its matrices (``module.matrices``) are programmed."""
    state = "simulated" if module.simulated else "digital"
    prog = "programmed" if all(m.programmed is not None for m in module.matrices) else "not programmed"
    return f"{plain}, {state}, {prog}"


def rebuild_module(module: torch.nn.Module, cls: type, *, exclude: tuple[str, ...] = ()) -> Any:
    """A ``cls`` instance carrying ``module``'s settings (its plain attributes: channels, kernel,
    stride, hidden size, ...) and the very same parameter, buffer and child objects (shared, not
    copied), registered in the same order, so ``state_dict`` keys and values are unchanged.
    ``exclude``: attributes not to carry over (a crossbar module's own state, when unpatching).
    Lists are copied (an RNN's list of its flat weights must not be shared between the two)."""
    new = cls.__new__(cls)
    torch.nn.Module.__init__(new)
    own = set(vars(new))  # torch.nn.Module's bookkeeping: the new module's own
    for k, v in vars(module).items():
        if k not in own and k not in exclude:
            object.__setattr__(new, k, list(v) if isinstance(v, list) else v)
    for n, p in module.named_parameters(recurse=False):
        setattr(new, n, p)
    if getattr(module, "bias", False) is None and not hasattr(new, "bias"):
        new.register_parameter("bias", None)  # Linear / Conv built with bias=False
    sd = module.state_dict(keep_vars=True)
    for n, b in module.named_buffers(recurse=False):
        new.register_buffer(n, b, persistent=n in sd)
    for n, c in module.named_children():
        setattr(new, n, c)
    new.train(module.training)
    return new
