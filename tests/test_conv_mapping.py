"""The im2col convention (mapping/conv.py): patches times the per-group weight matrices, folded
back, equal torch's own convolution (float64, to rounding) for every stride, padding, dilation,
group count and padding mode; shape arithmetic agrees with torch's output sizes."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from device.errors import InputError, UserError  # noqa: E402
from mapping.conv import ConvGeometry, conv_geometries, matrix_names  # noqa: E402


def via_matrices(conv, x):
    geo = ConvGeometry.from_module(conv)
    cols = geo.im2col(x)  # (G, N*L, C_g K)
    w = geo.weight_matrices(conv.weight.detach())  # (G, O_g, C_g K)
    y = torch.bmm(cols, w.transpose(1, 2))
    out = geo.output_size(geo.input_size(x))
    y = geo.col2im(y, x.shape[0], out)
    if conv.bias is not None:
        y = y + conv.bias.detach().view(1, -1, *([1] * geo.ndim))
    return y


CASES_2D = [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=2, padding=1, dilation=1, groups=1),
    dict(stride=(1, 2), padding=(2, 0), dilation=(2, 1), groups=1),
    dict(stride=1, padding=1, dilation=1, groups=2),
    dict(stride=2, padding=2, dilation=2, groups=6),  # depthwise
    dict(stride=1, padding="same", dilation=(1, 2), groups=3),
    dict(stride=1, padding="valid", dilation=1, groups=1),
    dict(stride=2, padding=1, dilation=1, groups=2, padding_mode="reflect"),
    dict(stride=1, padding=(1, 2), dilation=1, groups=1, padding_mode="replicate"),
    dict(stride=1, padding=1, dilation=1, groups=3, padding_mode="circular"),
]


@pytest.mark.parametrize("kw", CASES_2D)
@pytest.mark.parametrize("kernel", [3, (2, 3)])
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own reference pads a copy
def test_im2col_equals_conv2d(kw, kernel):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(6, 12, kernel, **kw).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, 9, 10, generator=g, dtype=torch.float64)
    ref = conv(x)
    y = via_matrices(conv, x)
    assert y.shape == ref.shape
    assert torch.allclose(y, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kw", [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=3, padding=2, dilation=2, groups=2),
    dict(stride=1, padding="same", dilation=3, groups=4, bias=False),
    dict(stride=2, padding=1, dilation=1, groups=1, padding_mode="circular"),
])
def test_im2col_equals_conv1d(kw):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        conv = torch.nn.Conv1d(4, 8, 3, **kw).double()
    x = torch.randn(2, 4, 17, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.allclose(via_matrices(conv, x), conv(x), rtol=0, atol=1e-12)


def test_shapes_and_mvm_counts():
    geo = ConvGeometry.make(3, 64, 3, stride=1, padding=1)
    assert geo.matrix_shape == (64, 27)  # rows = 3 channels x 9 kernel elements
    assert geo.output_size((32, 32)) == (32, 32)
    assert geo.mvms((32, 32)) == 1024
    assert geo.macs((32, 32)) == 1024 * 64 * 27
    dw = ConvGeometry.make(32, 32, 3, stride=2, padding=1, groups=32)
    assert dw.matrix_shape == (1, 9) and dw.output_size(15) == (8, 8)
    assert matrix_names("f.3", dw)[:2] == ["f.3:g0", "f.3:g1"] and matrix_names("f.0", geo) == ["f.0"]
    for (n, k, s, p, d) in itertools.product([7, 12], [1, 3], [1, 2], [0, 2], [1, 2]):
        conv = torch.nn.Conv2d(2, 2, k, stride=s, padding=p, dilation=d)
        if n + 2 * p < d * (k - 1) + 1:
            continue
        assert ConvGeometry.from_module(conv).output_size((n, n + 1)) == tuple(conv(torch.zeros(1, 2, n, n + 1)).shape[2:])


def test_conv_geometries_of_a_model_and_bad_input():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv1d(4, 2, 2), torch.nn.Linear(2, 2))
    geos = conv_geometries(model)
    assert list(geos) == ["0", "2"] and geos["2"].ndim == 1
    with pytest.raises(UserError, match="groups=3"):
        ConvGeometry.make(4, 6, 3, groups=3)
    with pytest.raises(UserError, match="padding"):
        ConvGeometry.make(4, 6, 3, padding="full")
    with pytest.raises(InputError, match="smaller than"):
        ConvGeometry.make(1, 1, 5).output_size(3)
    with pytest.raises(InputError, match="expected"):
        geos["0"].im2col(torch.zeros(1, 2, 5, 5))
    with pytest.raises(UserError, match="1-D and 2-D"):
        ConvGeometry.from_module(torch.nn.Conv3d(1, 1, 1))


def test_mapping_plan_from_module_holds_conv_groups():
    from crossbar.engine import CrossbarConfig
    from mapping.plan import MappingPlan

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 3, groups=2), torch.nn.Flatten(),
                                torch.nn.Linear(8, 4))
    cfg = CrossbarConfig(tile_rows=16, tile_cols=16)
    plan = MappingPlan.from_module(model, cfg)
    assert list(plan.layers) == ["0", "1:g0", "1:g1", "3"]
    assert (plan["0"].out_features, plan["0"].in_features) == (8, 27)
    assert (plan["1:g1"].out_features, plan["1:g1"].in_features) == (4, 36)
    # 27 word lines on 16-row tiles: 2 row blocks; 8 outputs x 8 cells (4 slices, differential) = 64
    # bit lines on 16-column tiles: 4 column blocks
    assert plan["0"].layout.n_row_blocks == 2 and plan["0"].layout.n_col_blocks == 4
