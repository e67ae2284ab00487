"""``CrossbarLSTM`` / ``CrossbarGRU``: recurrent layers whose matrices run on simulated crossbars.

Every layer ``l`` and direction of an ``nn.LSTM`` / ``nn.GRU`` has an input matrix
``weight_ih_l{l}[_reverse]`` ``(gates * hidden, input)`` and a recurrent matrix
``weight_hh_l{l}[_reverse]`` ``(gates * hidden, hidden)`` (an LSTM with ``proj_size > 0`` also
a projection ``weight_hr_l{l}[_reverse]`` ``(proj, hidden)``). Each is one crossbar matrix
(:class:`nn.crossbar_matrix.MatrixSlot`, named ``"<module>.<parameter>"``), programmed through the
same engine, pipeline and :class:`nn.sim.SimConfig` as a ``CrossbarLinear``. In a simulated
forward the input matrix reads every time step's input (all steps in one call: reads do not
depend on the batch, so that is the same as one read per step), the recurrent matrix reads the
previous hidden state at every time step, and the gates are computed digitally from the crossbar
outputs and the biases, with torch's equations (gate order ``i, f, g, o`` / ``r, z, n``)::

    LSTM: i, f, g, o = split(W_ih x_t + b_ih + W_hh h + b_hh); c' = sig(f) c + sig(i) tanh(g)
          h' = sig(o) tanh(c')                       (proj_size > 0: h' = W_hr h')
    GRU:  r = sig(a_r + b_r), z = sig(a_z + b_z) with a = W_ih x_t + b_ih, b = W_hh h + b_hh
          n = tanh(a_n + r * b_n); h' = (1 - z) n + z h

Multi-layer, bidirectional, ``batch_first``, unbatched input and ``PackedSequence`` input are
supported (a packed sequence's states stop at its length, as in torch; the reverse direction
starts at each sequence's last element; only the time steps a sequence has are read, so a
matrix's reads are its real MVMs). Inter-layer dropout applies in training mode.
``simulated=False`` runs the original module's forward (cuDNN or torch's fused kernel), bit for
bit; the parameters are shared, so names, ``state_dict`` keys and checkpoints are unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from nn.crossbar_matrix import MatrixSlot, crossbar_extra_repr, rebuild_module
from nn.sim import SimConfig

__all__ = ["CrossbarLSTM", "CrossbarGRU", "recurrent_forward", "lstm_cell", "gru_cell"]

_OWN = ("sim_cfg", "name", "simulated", "matrices")

#: ``fn(matrix, x (rows, in)) -> (rows, out)``: how one matrix product is computed (crossbar read or digital)
Product = Callable[[MatrixSlot, torch.Tensor], torch.Tensor]


def lstm_cell(gi: torch.Tensor, gh: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step from the input and recurrent pre-activations ``(B, 4H)`` (biases included)
    and the cell state ``c`` ``(B, H)``: ``(h', c')`` before any projection."""
    i, f, g, o = (gi + gh).chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_new), c_new


def gru_cell(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One GRU step from the input and recurrent pre-activations ``(B, 3H)`` (biases included) and
    the hidden state ``h`` ``(B, H)``: ``h'``."""
    a_r, a_z, a_n = gi.chunk(3, dim=-1)
    b_r, b_z, b_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(a_r + b_r)
    z = torch.sigmoid(a_z + b_z)
    n = torch.tanh(a_n + r * b_n)
    return (1 - z) * n + z * h


def recurrent_forward(module: Any, inputs: Any, hx: Any, product: Product) -> tuple[Any, Any]:
    """The forward of an LSTM / GRU (``module``: its settings and biases, and ``module.matrix(pname)``)
    with every matrix product computed by ``product``; returns what ``nn.LSTM`` / ``nn.GRU`` return."""
    lstm = module.mode == "LSTM"
    packed = isinstance(inputs, PackedSequence)
    lengths = None
    if packed:
        x, lengths = pad_packed_sequence(inputs)  # (T, B, I), original batch order
        batched = True
    else:
        batched = inputs.ndim == 3
        x = inputs if batched else inputs.unsqueeze(1)
        if batched and module.batch_first:
            x = x.transpose(0, 1)
    T, B = x.shape[0], x.shape[1]
    D = 2 if module.bidirectional else 1
    H = module.hidden_size
    Hr = module.proj_size if lstm and module.proj_size > 0 else H
    L = module.num_layers
    if hx is None:
        h0 = x.new_zeros(L * D, B, Hr)
        c0 = x.new_zeros(L * D, B, H) if lstm else None
    else:
        h0, c0 = hx if lstm else (hx, None)
        if not batched:
            h0 = h0.unsqueeze(1)
            c0 = c0.unsqueeze(1) if c0 is not None else None
    valid = None  # (T, B) bool: the time steps each sequence has (packed input); None = all
    if lengths is not None:
        valid = (torch.arange(T).view(T, 1) < lengths.view(1, B)).to(x.device)
    layer_in = x
    h_n: list[torch.Tensor] = []
    c_n: list[torch.Tensor] = []
    for layer in range(L):
        outs = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = module.matrix(f"weight_ih{sfx}"), module.matrix(f"weight_hh{sfx}")
            w_hr = module.matrix(f"weight_hr{sfx}") if Hr != H else None
            b_ih = getattr(module, f"bias_ih{sfx}") if module.bias else None
            b_hh = getattr(module, f"bias_hh{sfx}") if module.bias else None
            if valid is None:
                gi = product(w_ih, layer_in.reshape(T * B, -1)).view(T, B, -1)
            else:  # only the steps a sequence has are read (a chip does not read padding)
                g_in = product(w_ih, layer_in[valid])
                gi = g_in.new_zeros(T, B, g_in.shape[-1]).index_put((valid,), g_in)
            if b_ih is not None:
                gi = gi + b_ih
            h = h0[layer * D + d]
            c = c0[layer * D + d] if lstm else None
            ys: list[Any] = [None] * T
            for t in (range(T - 1, -1, -1) if d else range(T)):
                rows = None if valid is None or bool(valid[t].all()) else valid[t].nonzero().view(-1)
                h_r = h if rows is None else h.index_select(0, rows)  # the sequences still running
                gh = product(w_hh, h_r)
                if b_hh is not None:
                    gh = gh + b_hh
                gi_t = gi[t] if rows is None else gi[t].index_select(0, rows)
                if lstm:
                    h_new, c_new = lstm_cell(gi_t, gh, c if rows is None else c.index_select(0, rows))
                    if w_hr is not None:
                        h_new = product(w_hr, h_new)
                else:
                    h_new, c_new = gru_cell(gi_t, gh, h_r), None
                if rows is None:
                    h, c = h_new, c_new
                    ys[t] = h
                else:  # finished sequences keep their state; their output is zero (as unpacked by torch)
                    h = h.index_put((rows,), h_new)
                    c = c.index_put((rows,), c_new) if lstm else None
                    ys[t] = torch.zeros_like(h).index_put((rows,), h_new)
            outs.append(torch.stack(ys))
            h_n.append(h)
            if lstm:
                c_n.append(c)
        layer_in = outs[0] if D == 1 else torch.cat(outs, dim=-1)
        if module.dropout > 0 and module.training and layer < L - 1:
            layer_in = nn.functional.dropout(layer_in, module.dropout, training=True)
    out = layer_in
    hn = torch.stack(h_n)
    cn = torch.stack(c_n) if lstm else None
    if packed:
        si = inputs.sorted_indices
        o, ln = (out, lengths) if si is None else (out.index_select(1, si), lengths.index_select(0, si.cpu()))
        data = pack_padded_sequence(o, ln, enforce_sorted=True).data
        out = PackedSequence(data, inputs.batch_sizes, inputs.sorted_indices, inputs.unsorted_indices)
    elif not batched:
        out, hn = out.squeeze(1), hn.squeeze(1)
        cn = cn.squeeze(1) if cn is not None else None
    elif module.batch_first:
        out = out.transpose(0, 1)
    return out, ((hn, cn) if lstm else hn)


class _CrossbarRNN:
    """What the crossbar LSTM and GRU share (a mixin before ``nn.LSTM`` / ``nn.GRU``)."""

    sim_cfg: SimConfig
    name: str
    simulated: bool
    matrices: list[MatrixSlot]
    _plain: type

    @classmethod
    def from_rnn(cls, module: nn.Module, sim_cfg: SimConfig, name: str = "") -> Any:
        """A crossbar RNN sharing ``module``'s parameters (not copies)."""
        if type(module) is not cls._plain:
            raise ValueError(f"{name or 'module'} is a {type(module).__name__}, not an nn.{cls._plain.__name__}")
        new = rebuild_module(module, cls)
        new.sim_cfg, new.name, new.simulated = sim_cfg, name, False
        pnames = [n for n, _ in module.named_parameters(recurse=False) if n.startswith("weight_")]
        new.matrices = [MatrixSlot(f"{name}.{p}" if name else p, sim_cfg, new, p) for p in pnames]
        return new

    def to_plain(self) -> nn.Module:
        """The plain ``nn.LSTM`` / ``nn.GRU`` sharing this module's parameters."""
        return rebuild_module(self, self._plain, exclude=_OWN)

    def matrix(self, param_name: str) -> MatrixSlot:
        """The crossbar matrix of parameter ``param_name`` (e.g. ``"weight_hh_l0"``)."""
        for m in self.matrices:
            if m.param_name == param_name:
                return m
        raise KeyError(f"{self.name}: no crossbar matrix for parameter {param_name}")

    def forward(self, inputs: Any, hx: Any = None) -> Any:
        if not self.simulated and all(m.observer is None for m in self.matrices):
            return self._plain.forward(self, inputs, hx)  # the original module, bit for bit
        if self.simulated:
            return recurrent_forward(self, inputs, hx, lambda m, v: m.read(v))
        return recurrent_forward(self, inputs, hx, lambda m, v: m.digital(v))

    def extra_repr(self) -> str:
        return crossbar_extra_repr(self, self._plain.extra_repr(self))


class CrossbarLSTM(_CrossbarRNN, nn.LSTM):
    """An ``nn.LSTM`` on simulated crossbars (module docstring)."""

    _plain = nn.LSTM


class CrossbarGRU(_CrossbarRNN, nn.GRU):
    """An ``nn.GRU`` on simulated crossbars (module docstring)."""

    _plain = nn.GRU
