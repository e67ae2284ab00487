"""Convolutions and LSTM / GRU layers on crossbars (nn/crossbar_conv.py, nn/crossbar_rnn.py):
the ideal chip is within the quantization bound of the float layer (per patch, per read), the
recurrent forward equals torch's own cells, the digital switch is bit-exact, state_dict keys and
checkpoints are unchanged, one seed is one chip, and the mapping plan, protections, fault-map-aware
mapping, placement weights, calibration and hardware-aware training reach every matrix."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from crossbar.quant import dfp_frac_bits  # noqa: E402
from nn import crossbar_linear as cl  # noqa: E402
from nn.crossbar_rnn import CrossbarGRU, CrossbarLSTM, recurrent_forward  # noqa: E402
from nn.sim import build_sim_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

#: every supported layer, small tiles (the physics does not depend on the size here)
ALL = ["crossbar.tile_rows=32", "crossbar.tile_cols=32", "levels.source=synthetic",
       'target_modules=[".*"]', "exclude_modules=[]"]


class TinyNet(nn.Module):
    """Two convolutions (the second grouped and strided), a Linear head, a 2-layer bidirectional
    LSTM and a GRU: every kind of crossbar matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 8, 3, stride=2, groups=2, bias=False)
        self.fc = nn.Linear(8 * 3 * 3, 3)
        self.rnn = nn.LSTM(5, 6, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(12, 4)

    def forward(self, x: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        a = self.fc(torch.relu(self.c2(torch.relu(self.c1(x)))).flatten(1))
        o, _ = self.rnn(seq)
        o2, h2 = self.gru(o.transpose(0, 1))
        return torch.cat([a, o2[-1], h2[0]], dim=1)


def tiny(seed: int = 0, dtype=torch.float32) -> TinyNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyNet().to(dtype).eval()


def inputs(seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 1, 8, 8, generator=g).to(dtype), torch.randn(3, 7, 5, generator=g).to(dtype)


def run(model, xs):
    with torch.no_grad():
        return model(*xs)


def linear_bound(x: torch.Tensor, w: torch.Tensor, dw: float, bits: int) -> torch.Tensor:
    """``|y - x W^T| <= sum_i (|x_i| dw/2 + |w_i| dx/2 + dx dw/4)`` per row of ``x`` ``(n, in)``,
    ``dx`` the row's own dynamic-fixed-point step (the DAC step per input vector)."""
    dx = torch.exp2(-dfp_frac_bits(x.abs().amax(1), bits).double()).view(-1, 1)
    return x.abs().sum(1, keepdim=True) * dw / 2 + dx / 2 * w.abs().sum(1).view(1, -1) + x.shape[1] * dx * dw / 4


@pytest.mark.parametrize("kw", [dict(stride=1, padding=1, groups=1), dict(stride=2, padding=2, dilation=2, groups=3),
                                dict(stride=1, padding="same", dilation=(1, 2), groups=6, padding_mode="reflect")])
def test_conv_ideal_chip_within_quantization_bound(kw):
    """Ideal chip (noiseless levels, ideal ADC, float64): every output of a convolution is within
    the per-patch quantization bound of the float convolution, with each group's own weight step."""
    from mapping.conv import ConvGeometry

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        conv = nn.Conv2d(6, 12, 3, **kw).double()
    cfg = build_sim_config("ideal", ALL + ["dtype=float64"])
    m = nn.Sequential(conv)
    cl.patch_model(m, cfg)
    cl.program_model(m, np.random.default_rng(0))
    cl.set_simulated(m, True)
    x = torch.randn(2, 6, 9, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        cl.set_simulated(m, False)
        ref = m(x)
    assert y.shape == ref.shape
    geo = ConvGeometry.from_module(conv)
    cols = geo.im2col(x)
    w = geo.weight_matrices(conv.weight.detach())
    bounds = torch.stack([linear_bound(cols[g], w[g], float(mat.programmed.qweight.scale()), cfg.crossbar.input_bits)
                          for g, mat in enumerate(m[0].matrices)])
    bound = geo.col2im(bounds, 2, y.shape[2:])
    err = (y - ref).abs()
    assert torch.all(err <= bound * (1 + 1e-9))
    assert err.max() > 0  # it is quantized


def test_rnn_ideal_chip_every_read_within_quantization_bound():
    """Every read of every LSTM / GRU matrix (input and recurrent, every time step) on an ideal
    chip is within the quantization bound of ``x W^T`` on the very input it read."""
    m = tiny(dtype=torch.float64)
    cfg = build_sim_config("ideal", ALL + ["dtype=float64"])
    cl.patch_model(m, cfg)
    cl.program_model(m, np.random.default_rng(0))
    seen: dict[str, int] = {}

    def checked(name, w):
        def read(pm, x, gen):
            y = cl.default_read(pm, x, gen)
            bound = linear_bound(x, w, float(pm.qweight.scale()), cfg.crossbar.input_bits)
            assert torch.all((y - x @ w.T).abs() <= bound * (1 + 1e-9)), name
            seen[name] = seen.get(name, 0) + 1
            return y
        return read

    for n, mat in cl.crossbar_matrices(m).items():
        if "rnn" in n or "gru" in n:
            mat.read_fn = checked(n, mat.weight.detach())
    cl.set_simulated(m, True)
    run(m, inputs(dtype=torch.float64))
    assert seen["rnn.weight_ih_l1_reverse"] == 1 and seen["rnn.weight_hh_l0"] == 7 and seen["gru.weight_hh_l0"] == 7
    assert len(seen) == 10


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_forward_equals_torch_cells(kind):
    """The gate equations of the crossbar forward, with exact digital products, against torch's
    LSTMCell / GRUCell stepped by hand, and against nn.LSTM / nn.GRU (2 layers, bidirectional,
    batch_first, packed variable-length input, an LSTM projection), float64."""
    cls = nn.LSTM if kind == "lstm" else nn.GRU
    digital = lambda mat, v: v @ mat.weight.T  # noqa: E731
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        one = cls(5, 6).double()
    cell = (nn.LSTMCell if kind == "lstm" else nn.GRUCell)(5, 6).double()
    with torch.no_grad():
        for a in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, a).copy_(getattr(one, f"{a}_l0"))
    sim = (CrossbarLSTM if kind == "lstm" else CrossbarGRU).from_rnn(one, build_sim_config("ideal", ALL), "r")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 2, 5, generator=g, dtype=torch.float64)
    h = torch.randn(2, 6, generator=g, dtype=torch.float64)
    c = torch.randn(2, 6, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out, state = recurrent_forward(sim, x, (h[None], c[None]) if kind == "lstm" else h[None], digital)
        hh, cc = h, c
        for t in range(9):
            if kind == "lstm":
                hh, cc = cell(x[t], (hh, cc))
            else:
                hh = cell(x[t], hh)
            assert torch.allclose(out[t], hh, rtol=0, atol=1e-12)
    assert torch.allclose(state[0][0] if kind == "lstm" else state[0], hh, rtol=0, atol=1e-12)
    # the full module, every option at once
    kw = dict(num_layers=2, bidirectional=True, batch_first=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        full = cls(5, 6, **kw, **({"proj_size": 4} if kind == "lstm" else {})).double()
    sim = (CrossbarLSTM if kind == "lstm" else CrossbarGRU).from_rnn(full, build_sim_config("ideal", ALL), "r")
    xb = torch.randn(3, 8, 5, generator=g, dtype=torch.float64)
    lengths = torch.tensor([5, 8, 2])
    with torch.no_grad():
        for arg in (xb, pack_padded_sequence(xb, lengths, batch_first=True, enforce_sorted=False), xb[0]):
            ref_out, ref_state = full(arg)
            got_out, got_state = recurrent_forward(sim, arg, None, digital)
            if isinstance(arg, torch.Tensor):
                assert torch.allclose(got_out, ref_out, rtol=0, atol=1e-12)
            else:
                assert torch.equal(got_out.batch_sizes, ref_out.batch_sizes)
                assert torch.equal(got_out.sorted_indices, ref_out.sorted_indices)
                assert torch.allclose(got_out.data, ref_out.data, rtol=0, atol=1e-12)
                assert torch.allclose(pad_packed_sequence(got_out)[0], pad_packed_sequence(ref_out)[0], rtol=0, atol=1e-12)
            for a, b in zip(*((got_state, ref_state) if kind == "lstm" else ((got_state,), (ref_state,)))):
                assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_digital_switch_exact_state_dict_unchanged_and_checkpoints_load(tmp_path):
    m = tiny()
    xs = inputs()
    ref = run(m, xs)
    keys = list(m.state_dict())
    cfg = build_sim_config("default", ALL + ["faults.rate=0.01"])
    mods = cl.patch_model(m, cfg)
    assert {k: type(v).__name__ for k, v in mods.items()} == {
        "c1": "CrossbarConv2d", "c2": "CrossbarConv2d", "fc": "CrossbarLinear", "rnn": "CrossbarLSTM", "gru": "CrossbarGRU"}
    assert list(cl.crossbar_matrices(m))[:4] == ["c1", "c2:g0", "c2:g1", "fc"]
    assert len(cl.crossbar_matrices(m)) == 4 + 8 + 2
    assert list(m.state_dict()) == keys
    assert m.c1.weight is mods["c1"].weight and m.rnn.weight_hh_l1_reverse is mods["rnn"].weight_hh_l1_reverse
    assert torch.equal(run(m, xs), ref)  # patched, digital: the original forwards
    plain_reprs = {n: tiny().get_submodule(n).extra_repr() for n in mods}
    for n, mod in mods.items():  # every kind says what it is, as its plain module, then its state
        assert mod.extra_repr() == f"{plain_reprs[n]}, digital, not programmed"
    cl.program_model(m, np.random.default_rng(0))
    cl.set_simulated(m, True)
    for n, mod in mods.items():
        assert mod.extra_repr() == f"{plain_reprs[n]}, simulated, programmed"
    sim = run(m, xs)
    assert not torch.equal(sim, ref) and torch.isfinite(sim).all()
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    plain = tiny(seed=5)
    plain.load_state_dict(torch.load(tmp_path / "sd.pt"))
    assert torch.equal(run(plain, xs), ref)
    cl.set_simulated(m, False)
    assert torch.equal(run(m, xs), ref)
    m.load_state_dict(tiny(seed=7).state_dict())  # a checkpoint into the patched model: program again
    cl.set_simulated(m, True)
    with pytest.raises(ValueError, match="weight changed"):
        run(m, xs)
    cl.set_simulated(m, False)
    assert torch.equal(run(m, xs), run(tiny(seed=7), xs))
    cl.unpatch_model(m)
    assert not cl.crossbar_modules(m) and type(m.rnn) is nn.LSTM and type(m.c2) is nn.Conv2d and m.c2.bias is None
    assert list(m.state_dict()) == keys


def test_ideal_chip_at_16_bits_close_to_float():
    """16-bit weights and inputs on an ideal chip: relative error per read ~2^-15, through two
    convolutions, a bidirectional 2-layer LSTM over 7 steps and a GRU: within 1e-3 of float."""
    m = tiny()
    xs = inputs()
    ref = run(m, xs)
    cl.patch_model(m, build_sim_config("ideal", ALL + ["crossbar.weight_bits=16", "crossbar.input_bits=16"]))
    cl.program_model(m, np.random.default_rng(0))
    cl.set_simulated(m, True)
    assert torch.allclose(run(m, xs), ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max()))


def test_seeded_chips_bit_identical_and_reprogram():
    cfg = build_sim_config("default", ALL + ["faults.rate=0.02", "levels.sigma_rel=0.05",
                                             "read_noise=crossbar", "crossbar.read_noise_sigma_rel=0.02"])
    xs = inputs()
    outs = []
    for _ in range(2):
        m = tiny()
        cl.patch_model(m, cfg)
        cl.program_model(m, np.random.default_rng(4))
        cl.set_simulated(m, True)
        outs.append(run(m, xs))
    assert torch.equal(outs[0], outs[1])
    hh = cl.crossbar_matrices(m)["rnn.weight_hh_l0"]
    codes = hh.programmed.qweight.q.clone()
    cl.reprogram_model(m, np.random.default_rng(5))
    assert torch.equal(hh.programmed.qweight.q, codes)
    assert not torch.equal(run(m, xs), outs[0])
    cl.reprogram_model(m, np.random.default_rng(4))
    assert torch.equal(run(m, xs), outs[0])


def test_plan_protection_faultaware_and_calibration_reach_every_matrix():
    from mapping.protection import ProtectionConfig
    from nn.protect import protect_model

    m = tiny()
    xs = inputs()
    cfg = build_sim_config("default", ALL + ["faults.rate=0.02", "faultaware.reencode=true",
                                             "crossbar.adc_bits=8", "crossbar.adc_range=calibrated"])
    cl.patch_model(m, cfg)
    pp = protect_model(m, ProtectionConfig(msb_embed=True))
    mats = cl.crossbar_matrices(m)
    assert set(pp.plan.layers) == set(mats)
    assert all(mats[n].layout is pp.plan.layers[n].layout for n in mats)
    progs = cl.program_model(m, np.random.default_rng(0))
    assert all(getattr(mats[n].remap, "prot", None) is not None for n in mats)
    assert all(p.encoder is not None for p in progs.values())  # re-encoded around the stuck cells
    cl.set_simulated(m, True)
    with pytest.raises(ValueError, match="calibrate"):
        run(m, xs)
    cl.calibrate_model(m, xs)
    assert all(mats[n].programmed.calibrated for n in mats)
    assert torch.isfinite(run(m, xs)).all()


def test_placement_weights_of_conv_and_rnn_matrices():
    """nn.sensitivity on a convolution and an LSTM: ``in_sq`` is the mean square of the
    matrix's own input rows (im2col patches; every time step's input / previous hidden state)."""
    from mapping.conv import ConvGeometry
    from nn.sensitivity import layer_sensitivity

    m = tiny()
    xs = inputs()
    cl.patch_model(m, build_sim_config("default", ALL))
    sens = layer_sensitivity(m, [xs], forward=lambda model, b: model(*b), row_mask=lambda b: None)
    assert set(sens) == set(cl.crossbar_matrices(m))
    cols = ConvGeometry.from_module(m.c1).im2col(xs[0])[0].double()
    assert np.allclose(sens["c1"].in_sq, (cols**2).mean(0).numpy(), rtol=1e-12)
    assert sens["c1"].tokens == 3 * 64 and sens["rnn.weight_hh_l0"].tokens == 7 * 3
    x_ih = xs[1].reshape(-1, 5).double()
    assert np.allclose(sens["rnn.weight_ih_l0"].in_sq, (x_ih**2).mean(0).numpy(), rtol=1e-12)
    assert all(np.all(s.out_fisher >= 0) and s.out_fisher.sum() > 0 for s in sens.values())
    assert all(mat.observer is None for mat in cl.crossbar_matrices(m).values())
    assert torch.equal(run(m, xs), run(tiny(), xs))  # back to the bit-exact digital forwards


def test_hardware_weights_on_conv_groups_and_rnn_matrices():
    """matrix_weights lists the views hardware-aware training perturbs; the chip-matched view
    quantizes each convolution group with its own binary point, as the chip does; weights come
    back bit for bit."""
    from nn.hwtrain import HardwareView, hardware_weights

    m = tiny()
    cfg = build_sim_config("default", ALL)
    mw = cl.matrix_weights(m, cfg)
    m2 = tiny()
    cl.patch_model(m2, cfg)
    assert list(mw) == list(cl.crossbar_matrices(m2)) == list(cl.matrix_weights(m2, cfg))  # same names, patched or not
    assert mw["c2:g1"].shape == (4, 18) and mw["c2:g1"].data_ptr() == m.c2.weight[4:].data_ptr()
    before = {k: v.detach().clone() for k, v in m.state_dict().items()}
    view = HardwareView(cfg, noise_scale=0.0)
    with hardware_weights(mw, view, None):
        for n, w in mw.items():
            assert torch.equal(w, view(before_matrix(before, n, m), None))
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


def before_matrix(sd, name, model):
    from mapping.conv import ConvGeometry

    if name.startswith("c2:g"):
        return ConvGeometry.from_module(model.c2).weight_matrices(sd["c2.weight"])[int(name[-1])]
    key = {"c1": "c1.weight", "fc": "fc.weight"}.get(name, name)
    w = sd[key]
    return w.reshape(w.shape[0], -1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    m = tiny()
    xs = inputs()
    cl.patch_model(m, build_sim_config("default", ALL + ["faults.rate=0.02"]))
    cl.program_model(m, np.random.default_rng(0))
    cl.set_simulated(m, True)
    cpu = run(m, xs)
    m.cuda()
    gpu = run(m, [x.cuda() for x in xs])  # the same chip, moved
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)


def test_packed_sequences_read_only_their_own_time_steps():
    """A packed batch of lengths 5, 2, 3: the input matrix reads 10 vectors, the recurrent matrix
    5 times with 3, 3, 2, 1, 1 running sequences (the MVMs a chip does), and the outputs match
    the unpacked sequences run one by one."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = nn.Sequential(nn.LSTM(4, 5, batch_first=True))
    cl.patch_model(m, build_sim_config("default", ALL + ["levels.sigma_rel=0.05"]))
    cl.program_model(m, np.random.default_rng(0))
    cl.set_simulated(m, True)
    rows: dict[str, list[int]] = {"ih": [], "hh": []}
    for n, mat in cl.crossbar_matrices(m).items():
        key = "ih" if "ih" in n else "hh"
        mat.read_fn = lambda pm, x, gen, key=key: (rows[key].append(x.shape[0]), cl.default_read(pm, x, gen))[1]
    x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([5, 2, 3])
    with torch.no_grad():
        out, (h, _) = m[0](pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        assert rows == {"ih": [10], "hh": [3, 3, 2, 1, 1]}
        padded = pad_packed_sequence(out, batch_first=True)[0]
        for b in range(3):
            o1, (h1, _) = m[0](x[b:b + 1, : lengths[b]])  # reads do not depend on the batch
            assert torch.equal(padded[b, : lengths[b]], o1[0]) and torch.equal(h[0, b], h1[0, 0])


def test_cost_model_counts_the_mvms_of_convolutions_and_rnns():
    """nn.cost sees every crossbar matrix's own reads: a convolution group one MVM per output
    position, an LSTM / GRU matrix one per time step (input and recurrent alike)."""
    from mapping.technology import TECH_PRESETS
    from nn.cost import cost_model

    m = tiny()
    x, seq = inputs()
    cl.patch_model(m, build_sim_config("default", ALL))
    cl.program_model(m, np.random.default_rng(0))
    rep = cost_model(m, [{"x": x, "seq": seq}], next(iter(TECH_PRESETS.values()))())
    mvms = {lc.name: lc.mvms for lc in rep.layers}
    assert set(mvms) == set(cl.crossbar_matrices(m))
    assert mvms["c1"] == 64 and mvms["c2:g0"] == mvms["c2:g1"] == 9 and mvms["fc"] == 1  # per image
    assert mvms["rnn.weight_ih_l0"] == mvms["rnn.weight_hh_l1_reverse"] == mvms["gru.weight_hh_l0"] == 7
    assert rep.energy_j > 0
