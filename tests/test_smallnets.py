"""The small nets of seed paper 2 (nn/smallnets.py): real digits data split as documented, a
word vocabulary on synthetic sentences, training that is seeded and reproducible (normal, DVA,
chip-matched DVA), model directories that round-trip, and evaluation rows through the study
engine (task "digits", or "sst2" with an LSTM) keyed and resumed like BERT's."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from device.config import ConfigError  # noqa: E402
from nn import smallnets as sn  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY_CNN = dict(arch="digits_cnn", epochs=2, max_train_examples=96, arch_kwargs={"c1": 2, "c2": 4, "hidden": 16})


def synthetic_sst2(root, n_train=160, n_dev=40, seed=0):
    """A GLUE directory with a synthetic SST-2: the label decides one sentiment word per sentence."""
    r = random.Random(seed)
    pos, neg = ["good", "great", "fine", "lovely"], ["bad", "awful", "dull", "poor"]
    filler = ["the", "film", "is", "a", "movie", "plot", "very", "and", "quite"]
    d = root / "SST-2"
    d.mkdir(parents=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        lines = ["sentence\tlabel"]
        for i in range(n):
            words = [r.choice(filler) for _ in range(r.randint(1, 7))] + [r.choice(pos if i % 2 else neg)]
            r.shuffle(words)
            lines.append(" ".join(words) + f" \t{i % 2}")
        (d / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_digits_split_is_stratified_and_scaled():
    tr, dv = sn.load_digits_split("train"), sn.load_digits_split("dev")
    assert (len(tr), len(dv)) == (1437, 360)  # 80 / 20 of 1,797
    assert tr.x.shape == (1437, 1, 8, 8) and tr.x.dtype == np.float32
    assert tr.x.min() == 0.0 and tr.x.max() == 1.0  # 16 grey levels scaled to [0, 1]
    counts = np.bincount(dv.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: each digit ~36 of 360
    b = dv.batch([0, 5], "cpu")
    assert b["x"].shape == (2, 1, 8, 8) and torch.equal(b["labels"], torch.from_numpy(dv.labels[[0, 5]]))
    assert sn.digits_digest() == sn.digits_digest() and sn.digits_digest().startswith("sha256:")
    with pytest.raises(sn.SmallNetError, match="'train' or 'dev'"):
        sn.load_digits_split("test")


def test_vocab_and_encoding():
    v = sn.build_vocab(["a b b c", "b c d"], min_count=2)
    assert v.words == ("b", "c") and len(v) == 4  # b (3) then c (2); pad 0, unknown 1
    from nn.glue import GlueSplit

    sp = GlueSplit(task="sst2", split="dev", text_a=["B c zzz", ""], text_b=None, labels=np.array([1, 0]))
    enc = sn.encode_sst2(sp, v, max_length=2)
    assert enc.input_ids == [[2, 3], [1]] and list(enc.lengths) == [2, 1]


def test_train_is_seeded_and_the_directory_round_trips(tmp_path):
    cfg = sn.TrainConfig(**TINY_CNN)
    meta = sn.train(cfg, tmp_path / "a", progress=False)
    sn.train(cfg, tmp_path / "b", progress=False)
    a, meta_a, _ = sn.load_model(tmp_path / "a")
    b, _, _ = sn.load_model(tmp_path / "b")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert meta_a == json.loads((tmp_path / "a" / sn.SMALLNET_FILE).read_text()) and meta["task"] == "digits"
    assert set(meta["weight_ranges"]) == {"conv1", "conv2", "fc1", "fc2"}
    assert meta["train_examples"] == 96 and len(meta["history"]) == 2
    x = torch.from_numpy(sn.load_digits_split("dev").x[:8])
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    c = sn.train(cfg.replace(seed=1), tmp_path / "c", progress=False)
    assert c["weight_ranges"] != meta["weight_ranges"]
    with pytest.raises(ConfigError, match="dva_sigma"):
        sn.TrainConfig(**TINY_CNN, dva_mode="crossbar", dva_sigma=0.1)
    with pytest.raises(ConfigError, match="optimizer"):
        sn.TrainConfig(**{**TINY_CNN, "optimizer": "lbfgs"})


def test_dva_and_chip_matched_training_change_the_weights_and_restore_them(tmp_path):
    """Both kinds of training noise run on every crossbar matrix (convolution groups included)
    and give other weights than normal training from the same seed."""
    base = sn.train(sn.TrainConfig(**TINY_CNN), tmp_path / "n", progress=False)
    dva = sn.train(sn.TrainConfig(**TINY_CNN, dva_sigma=0.1), tmp_path / "d", progress=False)
    hw = sn.train(sn.TrainConfig(**TINY_CNN, dva_mode="crossbar", sim=("levels.source=synthetic", "levels.sigma_rel=0.05",
                                                                        "levels.on_off_ratio=2")),
                  tmp_path / "h", progress=False)
    assert dva["weight_ranges"] != base["weight_ranges"] != hw["weight_ranges"]
    assert hw["hardware_view"]["noise_std_lsb_code0"] > 0  # on/off 2: HRS cells carry noise
    # chip-matched fine-tuning starts from the normal model (its hash recorded)
    ft = sn.train(sn.TrainConfig(**{**TINY_CNN, "epochs": 1}, dva_mode="crossbar", init=str(tmp_path / "n"), max_grad_norm=1.0,
                                 sim=("levels.source=synthetic", "levels.sigma_rel=0.05")), tmp_path / "f", progress=False)
    from nn.provenance import model_digest

    assert ft["init_sha256"] == model_digest(tmp_path / "n") and ft["weight_ranges"] != base["weight_ranges"]
    with pytest.raises(sn.SmallNetError, match="another architecture"):
        sn.train(sn.TrainConfig(**{**TINY_CNN, "arch_kwargs": {}}, init=str(tmp_path / "n")).replace(arch="lstm_classifier"),
                 tmp_path / "x", glue_dir=synthetic_sst2(tmp_path / "glue"), progress=False)


def test_study_rows_for_digits_and_an_lstm(tmp_path):
    """The study engine runs small nets: a CNN on digits and an LSTM on (synthetic) SST-2, two
    chips per point, rows keyed by content; a rerun computes nothing; the same seed gives the same
    numbers in a fresh process-free rerun into another file."""
    from nn.evaluate import read_results
    from nn.study import StudySpec, run_study

    glue = synthetic_sst2(tmp_path / "glue")
    cnn = tmp_path / "cnn"
    sn.train(sn.TrainConfig(**TINY_CNN), cnn, progress=False)
    lstm = tmp_path / "lstm"
    sn.train(sn.TrainConfig(arch="lstm_classifier", epochs=3, optimizer="adam", lr=1e-2, max_length=12, min_count=1,
                            arch_kwargs={"embed": 8, "hidden": 8}), lstm, glue_dir=glue, progress=False)
    common = {"preset": "default", "set": sn.all_layers() + ["levels.source=synthetic", "levels.sigma_rel=0.05"],
              "axes": {"levels.on_off_ratio": [2, 100]}, "methods": {"dfp": []}, "trials": 2, "max_examples": 24,
              "max_length": 12}
    for task, model in (("digits", cnn), ("sst2", lstm)):
        spec = StudySpec.from_dict({**common, "tasks": [task], "model": str(model), "glue_dir": str(glue)})
        res = run_study(spec, tmp_path / f"s_{task}", progress=False, plot=False)
        rows = read_results(res["csv"])
        assert len(rows) == 1 + 2 * 2 and res["complete"]
        assert {r["task"] for r in rows} == {task} and all(r["n_examples"] == 24 for r in rows)
        sim = [r for r in rows if r["mode"] == "simulated"]
        assert all(0 <= r["accuracy"] <= 1 and r["score"] == r["accuracy"] for r in sim)
        assert len({r["config_hash"] for r in sim}) == 2  # one key per point
        assert run_study(spec, tmp_path / f"s_{task}", progress=False, plot=False)["written"] == 0
        again = read_results(run_study(spec, tmp_path / f"t_{task}", progress=False, plot=False)["csv"])
        assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows]  # seeded chips


def test_fault_map_aware_placement_weighted_on_a_cnn(tmp_path):
    """Fisher-weighted placement reaches a small net: the session estimates the placement weights
    on digits training images with the CNN's own forward and every crossbar matrix (convolutions
    included) gets a weighted mapper; the chip then runs."""
    sn.train(sn.TrainConfig(**TINY_CNN), tmp_path / "cnn", progress=False)
    sess = sn.open_session(tmp_path / "cnn", "digits", None, max_examples=24)
    cfg = sn.smallnet_sim("default", ["levels.source=synthetic", "faults.rate=0.02", "faultaware.reencode=true",
                                      "faultaware.placement=true", "faultaware.placement_weighting=fisher"])
    m = sess.simulated_metrics(cfg, 0, 0)
    assert 0 <= m["accuracy"] <= 1
    from nn.crossbar_linear import crossbar_matrices

    mats = crossbar_matrices(sess.model)
    assert set(mats) == {"conv1", "conv2", "fc1", "fc2"}
    assert all(getattr(x.remap, "in_weight", None) is not None for x in mats.values())
    sess.unpatch()
