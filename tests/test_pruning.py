"""Differentiable row/column pruning: gate statistics, target sparsity, masks that stay applied."""

import math

import pytest
import torch
from torch import nn

from nn.pruning import PruningConfig, RowColPruner, _HardConcrete, load_masks, save_masks


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.dense = nn.Linear(16, 12)
        self.head = nn.Linear(12, 1)

    def forward(self, x):
        return self.head(torch.relu(self.encoder.dense(x)))


def test_hard_concrete_keep_probability_matches_samples():
    cfg = PruningConfig(init_keep=0.8)
    g = _HardConcrete(20000, cfg)
    g.generator = torch.Generator().manual_seed(0)
    assert torch.allclose(g.keep_probability(), torch.full((20000,), 0.8), atol=1e-6)
    z = g().detach()
    # P(z > 0) = keep probability; 20000 Bernoulli draws: 5 sigma = 0.014
    assert abs(float((z > 0).float().mean()) - 0.8) < 5 * math.sqrt(0.8 * 0.2 / 20000)
    assert float(z.min()) >= 0.0 and float(z.max()) <= 1.0


def test_pruning_reaches_target_and_prunes_irrelevant_inputs():
    torch.manual_seed(0)  # test-local model init only; the library takes generators
    gen = torch.Generator().manual_seed(1)
    model = _Toy()
    cfg = PruningConfig(target_sparsity=0.3, target_modules=r"encoder\.dense$", lr_gates=0.1, lr_lambda=0.2)
    pruner = RowColPruner(model, cfg, generator=gen)
    # only the first 8 inputs matter
    x = torch.randn(512, 16, generator=gen)
    y = (x[:, :8] ** 2).sum(1, keepdim=True) / 8
    opt = torch.optim.Adam(list(model.parameters()) + list(pruner.gate_parameters()), lr=0.03)
    opt_l = torch.optim.Adam(pruner.lambda_parameters(), lr=cfg.lr_lambda, maximize=True)
    steps = 300
    for step in range(steps):
        loss = nn.functional.mse_loss(model(x), y) + pruner.lagrangian(step / steps)
        opt.zero_grad(); opt_l.zero_grad()
        loss.backward()
        opt.step(); opt_l.step()
    s = float(pruner.expected_sparsity()["encoder.dense"].detach())
    assert abs(s - 0.3) < 0.05, s
    masks = pruner.finalize()
    m = masks["encoder.dense"]
    assert m.rows.numel() + m.cols.numel() == 28
    assert (~m.rows).sum() + (~m.cols).sum() == round(0.3 * 28)
    # pruned input rows come from the irrelevant half
    assert bool(m.rows[:8].all()), m.rows
    w = model.encoder.dense.weight
    assert torch.all(w[~m.weight_mask()] == 0)
    # recovery fine-tune keeps them at zero
    opt2 = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt2.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt2.step()
    assert torch.all(model.encoder.dense.weight[~m.weight_mask()] == 0)


def test_masks_round_trip(tmp_path):
    model = _Toy()
    pruner = RowColPruner(model, PruningConfig(target_sparsity=0.25, target_modules=r"dense$"), generator=torch.Generator().manual_seed(0))
    masks = pruner.finalize()
    p = save_masks(tmp_path / "m.safetensors", masks)
    back = load_masks(p)
    assert set(back) == set(masks)
    assert torch.equal(back["encoder.dense"].rows, masks["encoder.dense"].rows)
    assert abs(back["encoder.dense"].sparsity - 0.25) < 1 / 28


@pytest.mark.parametrize("kw,msg", [({"target_sparsity": 1.0}, "target_sparsity=1.0"), ({"target_sparsity": -0.1}, "target_sparsity"), ({"scope": "tile"}, "scope"), ({"target_modules": "("}, "regex")])
def test_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        PruningConfig(**kw)


def test_generator_is_required():
    with pytest.raises(TypeError, match="generator"):
        RowColPruner(_Toy(), PruningConfig(target_modules="dense$"))  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="torch.Generator"):
        RowColPruner(_Toy(), PruningConfig(target_modules="dense$"), generator=None)  # type: ignore[arg-type]


def test_no_matching_module():
    with pytest.raises(ValueError, match="no nn.Linear module name matches"):
        RowColPruner(_Toy(), PruningConfig(target_modules="attention"), generator=torch.Generator().manual_seed(0))


def _tiny_run(tmp_path, name, stop_after=None, **kw):
    from _tiny_bert import write_glue, write_tiny_classifier

    from nn.finetune import FinetuneConfig, finetune

    base = tmp_path / "base"
    if not base.exists():
        write_tiny_classifier(base)
        write_glue(tmp_path / "glue")
    cfg = FinetuneConfig(task="sst2", epochs=4, batch_size=4, lr=1e-3, max_length=16, checkpoint_every=0, **kw)
    out = tmp_path / name
    res = finetune(cfg, base, tmp_path / "glue", out, progress=False, num_threads=1, stop_after_steps=stop_after)
    return out, res


def test_finetune_with_pruning_saves_exact_masks_and_resumes_identically(tmp_path):
    from safetensors.torch import load_file

    from nn.finetune import read_finetune_info
    from nn.pruning import MASKS_FILE

    out, res = _tiny_run(tmp_path, "full", prune_rows_cols=0.25)
    assert res is not None
    masks = load_masks(out / MASKS_FILE)
    assert len(masks) == 2 * 6  # 2 layers x (query, key, value, attention.output, intermediate, output)
    for name, m in masks.items():
        n = m.rows.numel() + m.cols.numel()
        assert (~m.rows).sum() + (~m.cols).sum() == round(0.25 * n), name
    weights = load_file(str(out / "model.safetensors"))
    for name, m in masks.items():
        w = weights[f"{name}.weight"]
        assert torch.all(w[~m.weight_mask()] == 0), name
        assert torch.count_nonzero(w[m.weight_mask()]) > 0.9 * m.weight_mask().sum()
    info = read_finetune_info(out)
    assert info["pruning"]["gate_steps"] == round(0.6 * info["steps"])
    # interrupted inside the gate phase and again in recovery: bit-identical final weights
    out2, r = _tiny_run(tmp_path, "resumed", stop_after=3, prune_rows_cols=0.25)
    assert r is None
    _, r = _tiny_run(tmp_path, "resumed", stop_after=info["steps"] - 2, prune_rows_cols=0.25)
    assert r is None
    _tiny_run(tmp_path, "resumed", prune_rows_cols=0.25)
    w2 = load_file(str(out2 / "model.safetensors"))
    for k in weights:
        assert torch.equal(weights[k], w2[k]), k


def test_finetune_rejects_bad_sparsity():
    from nn.finetune import FinetuneConfig

    with pytest.raises(ValueError, match=r"prune_rows_cols=1.0 is invalid"):
        FinetuneConfig(prune_rows_cols=1.0)


def test_finalize_preserves_the_eval_mode_function_of_kept_lines():
    torch.manual_seed(0)
    model = _Toy()
    name = "encoder.dense"
    pruner = RowColPruner(model, PruningConfig(target_sparsity=0.25, target_modules=r"encoder\.dense$"), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # spread the gates so that some lines go and kept ones have z < 1
        pruner.row_gates[name].log_alpha.copy_(torch.linspace(-3, 3, 16))
        pruner.col_gates[name].log_alpha.copy_(torch.linspace(-3, 3, 12))
        zr = pruner.row_gates[name](training=False)
        zc = pruner.col_gates[name](training=False)
    lin = model.encoder.dense
    w0, b = lin.weight.detach().clone(), lin.bias.detach().clone()
    model.eval()
    m = pruner.finalize()[name]
    x = torch.randn(8, 16)
    with torch.no_grad():
        out = lin(x)
    # eval-mode gated layer with the removed inputs dropped: zc * ((x * zr * rows) W0^T) + b
    ref = zc * ((x * zr * m.rows) @ w0.T) + b
    assert torch.allclose(out[:, m.cols], ref[:, m.cols], atol=1e-5)
    assert torch.equal(out[:, ~m.cols], b[~m.cols].expand(8, -1))


class _ThreeLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.a = nn.Linear(16, 40)
        self.encoder.b = nn.Linear(40, 24)
        self.encoder.c = nn.Linear(24, 10)

    def forward(self, x):
        return self.encoder.c(torch.relu(self.encoder.b(torch.relu(self.encoder.a(x)))))


def _spread_gates(pruner, gen, shift):
    """Random gate logits, per layer shifted so the layers' expected sparsities differ and their
    line-weighted mean is far from the target (what an overshooting multiplier leaves)."""
    with torch.no_grad():
        for k, name in enumerate(pruner.layers):
            for g in (pruner.row_gates[name], pruner.col_gates[name]):
                g.log_alpha.copy_(torch.randn(g.log_alpha.shape, generator=gen) * 2.0 + shift[k])


@pytest.mark.parametrize("target", [0.1, 0.3, 0.55])
def test_global_finalize_removes_exactly_the_target_fraction_of_all_lines(target):
    from nn.pruning import mask_summary

    torch.manual_seed(0)
    model = _ThreeLayers()
    cfg = PruningConfig(target_sparsity=target, scope="global", target_modules=r"encoder\.[abc]$")
    pruner = RowColPruner(model, cfg, generator=torch.Generator().manual_seed(0))
    _spread_gates(pruner, torch.Generator().manual_seed(1), shift=[-2.0, 0.5, 2.0])
    keep = {n: torch.cat([pruner.row_gates[n].keep_probability(), pruner.col_gates[n].keep_probability()]).detach() for n in pruner.layers}
    expected = float(pruner.total_expected_sparsity().detach())
    n_lines = sum(l.in_features + l.out_features for l in pruner.layers.values())  # 16+40+40+24+24+10
    assert abs(expected - target) * n_lines > 4  # the gates alone would miss the target by > 4 lines
    masks = pruner.finalize()
    summ = mask_summary(masks)
    assert summ["lines"] == n_lines == 154
    # exactly round(t * N) lines: within one line of t * N
    assert summ["lines_removed"] == round(target * n_lines)
    assert abs(summ["rows_cols_removed"] - target) <= 1.0 / n_lines
    # the removed lines are the globally least likely ones (no cap binds here)
    removed = torch.cat([keep[n][~torch.cat([m.rows, m.cols])] for n, m in masks.items()])
    kept = torch.cat([keep[n][torch.cat([m.rows, m.cols])] for n, m in masks.items()])
    assert float(removed.max()) <= float(kept.min())
    # weights removed, counted directly from the weight masks
    w_total = sum(m.weight_mask().numel() for m in masks.values())
    w_gone = sum(int((~m.weight_mask()).sum()) for m in masks.values())
    assert summ["weights_removed"] == pytest.approx(w_gone / w_total)


def test_global_finalize_caps_each_layer():
    torch.manual_seed(0)
    model = _ThreeLayers()
    cfg = PruningConfig(target_sparsity=0.4, scope="global", target_modules=r"encoder\.[abc]$", max_layer_sparsity=0.5)
    pruner = RowColPruner(model, cfg, generator=torch.Generator().manual_seed(0))
    # layer a's gates are all nearly off: without the cap all 56 of its lines would go
    _spread_gates(pruner, torch.Generator().manual_seed(2), shift=[-12.0, 3.0, 3.0])
    masks = pruner.finalize()
    a = masks["encoder.a"]
    assert int((~a.rows).sum()) == 8 and int((~a.cols).sum()) == 20  # floor(0.5 * 16), floor(0.5 * 40)
    assert sum(int((~m.rows).sum() + (~m.cols).sum()) for m in masks.values()) == round(0.4 * 154)


def test_global_target_above_the_layer_cap_is_rejected():
    with pytest.raises(ValueError, match="max_layer_sparsity"):
        PruningConfig(target_sparsity=0.6, scope="global", max_layer_sparsity=0.5)


def test_finetune_global_scope_reports_and_saves_the_exact_target(tmp_path):
    from nn.finetune import read_finetune_info
    from nn.pruning import MASKS_FILE, mask_summary

    out, res = _tiny_run(tmp_path, "global", prune_rows_cols=0.25, prune_scope="global")
    assert res is not None
    masks = load_masks(out / MASKS_FILE)
    summ = mask_summary(masks)
    assert summ["lines_removed"] == round(0.25 * summ["lines"])
    pr = read_finetune_info(out)["pruning"]
    assert pr["lines_removed"] == summ["lines_removed"] and pr["lines"] == summ["lines"]
    assert pr["rows_cols_removed"] == pytest.approx(summ["rows_cols_removed"])
    assert pr["weights_removed"] == pytest.approx(summ["weights_removed"])
    assert 0.0 <= pr["expected_sparsity_at_boundary"] <= 1.0


def test_cli_prints_both_sparsities(tmp_path, capsys):
    from _tiny_bert import write_glue, write_tiny_classifier

    from cli.main import main
    from nn.finetune import read_finetune_info

    write_tiny_classifier(tmp_path / "base")
    write_glue(tmp_path / "glue")
    out = tmp_path / "cli"
    rc = main(["finetune", "--model", str(tmp_path / "base"), "--task", "sst2", "--glue-dir", str(tmp_path / "glue"), "--out", str(out),
               "--epochs", "2", "--batch-size", "4", "--max-length", "16", "--lr", "1e-3", "--prune-rows-cols", "0.25", "--prune-scope", "global"])
    assert rc == 0
    pr = read_finetune_info(out)["pruning"]
    text = capsys.readouterr().out
    assert f"{pr['rows_cols_removed']:.4f} of their rows + columns removed ({pr['lines_removed']} of {pr['lines']})" in text
    assert f"{pr['weights_removed']:.4f} of their weights" in text
