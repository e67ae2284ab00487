"""GLUE loaders: the 7 tasks in the shared data folder, MNLI/QQP on files in GLUE format, quirks,
malformed input, the hub mapping, subsetting and tokenization."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from nn import glue
from nn.glue import GlueDataError

REPO = Path(__file__).resolve().parents[1]


def _shared_glue_dir() -> Path | None:
    env = os.environ.get("GLUE_DIR")
    if env and Path(env).is_dir():
        return Path(env)
    p = REPO.parent / "shared" / "data" / "glue"
    return p if p.is_dir() else None


@pytest.fixture(scope="module")
def glue_dir() -> Path:
    d = _shared_glue_dir()
    if d is None:
        pytest.skip("no GLUE directory (set GLUE_DIR or provide ../shared/data/glue)")
    return d


# Official GLUE split sizes (and dev label counts from shared/data/glue/SOURCES.md).
LOCAL = [
    ("cola", "train", 8551, None),
    ("cola", "dev", 1043, {0: 322, 1: 721}),
    ("sst2", "train", 67349, None),
    ("sst2", "dev", 872, {0: 428, 1: 444}),
    ("mrpc", "train", 3668, None),
    ("mrpc", "dev", 408, {0: 129, 1: 279}),
    ("stsb", "train", 5749, None),
    ("stsb", "dev", 1500, None),
    ("qnli", "dev", 5463, {0: 2702, 1: 2761}),  # entailment=0, not_entailment=1
    ("rte", "train", 2490, None),
    ("rte", "dev", 277, {0: 146, 1: 131}),
    ("wnli", "dev", 71, {0: 40, 1: 31}),
]


@pytest.mark.parametrize("task,split,n,counts", LOCAL, ids=[f"{t}-{s}" for t, s, _, _ in LOCAL])
def test_local_sizes_and_labels(glue_dir, task, split, n, counts):
    s = glue.load_split(task, split, glue_dir)
    assert len(s) == n
    assert s.skipped == 0
    t = glue.get_task(task)
    assert (s.text_b is None) == (t.text_b is None)
    assert all(isinstance(x, str) and x for x in s.text_a[:50])
    if t.is_regression:
        assert s.labels.dtype == np.float32
        assert 0.0 <= s.labels.min() and s.labels.max() <= 5.0
    else:
        assert s.labels.dtype == np.int64
        assert set(np.unique(s.labels)) <= set(range(t.num_labels))
    if counts is not None:
        vals, cnt = np.unique(s.labels, return_counts=True)
        assert dict(zip(vals.tolist(), cnt.tolist())) == counts


def test_local_quirks(glue_dir):
    # CoLA has no header: the first line is data, the sentence is the 4th field.
    cola = glue.load_split("cola", "dev", glue_dir)
    assert cola.text_a[0] == "The sailors rode the breeze clear of the rocks."
    assert cola.labels[0] == 1
    # MRPC: BOM stripped, so the header is found; a lone leading quote stays in the text
    # (QUOTE_NONE) instead of swallowing the following rows.
    mrpc = glue.load_split("mrpc", "dev", glue_dir)
    assert mrpc.text_b[0] == '"The foodservice pie business does not fit our long-term growth strategy.'
    # STS-B: score from the last of 10 columns, sentences from columns 8 and 9.
    stsb = glue.load_split("stsb", "dev", glue_dir)
    assert stsb.text_a[0] == "A man with a hard hat is dancing."
    assert stsb.labels[:2].tolist() == [5.0, 4.75]
    # Files absent from the shared folder give the loader's error, not an OSError.
    with pytest.raises(GlueDataError, match="does not exist"):
        glue.load_split("qnli", "train", glue_dir)


def test_registry():
    assert set(glue.TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    assert glue.get_task("STS-B").num_labels == 1 and glue.get_task("stsb").is_regression
    assert glue.get_task("MNLI").num_labels == 3
    assert glue.get_task("mnli").dev_splits == ("dev_matched", "dev_mismatched")
    assert glue.get_task("SST-2") is glue.TASKS["sst2"]
    with pytest.raises(ValueError, match="unknown GLUE task"):
        glue.get_task("squad")


# --- MNLI and QQP in exact GLUE format, written here -----------------------------------------

MNLI_TRAIN_HEADER = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"
)
MNLI_DEV_HEADER = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"
)


def _mnli_row(i, s1, s2, labels, gold):
    return "\t".join([str(i), "31193", f"{i}n", "government", "( ( x ) )", "( y )", "(ROOT x)", "(ROOT y)", s1, s2, *labels, gold])


def _write(path: Path, lines: list[str], encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding=encoding)


@pytest.fixture()
def mnli_qqp_dir(tmp_path) -> Path:
    d = tmp_path / "glue"
    _write(d / "MNLI" / "train.tsv", [
        MNLI_TRAIN_HEADER,
        _mnli_row(0, "Conceptually cream skimming has two basic dimensions.", "Product and geography are what make cream skimming work. ", ["neutral"], "neutral"),
        _mnli_row(1, 'He said "yes.', "He agreed.", ["entailment"], "entailment"),
        _mnli_row(2, "Nobody came.", "Everyone came.", ["contradiction"], "contradiction"),
    ])
    _write(d / "MNLI" / "dev_matched.tsv", [
        MNLI_DEV_HEADER,
        _mnli_row(0, "The new rights are nice enough", "Everyone really likes the newest benefits ", ["neutral", "entailment", "neutral", "neutral", "neutral"], "neutral"),
        _mnli_row(1, "This site includes a list.", "The list is here.", ["entailment"] * 5, "entailment"),
    ])
    _write(d / "MNLI" / "dev_mismatched.tsv", [
        MNLI_DEV_HEADER,
        _mnli_row(0, "Your gift is appreciated.", "Hundreds of students will benefit.", ["neutral"] * 5, "neutral"),
        _mnli_row(1, "It was cold.", "It was hot.", ["contradiction"] * 5, "contradiction"),
        _mnli_row(2, "She left.", "She is gone.", ["entailment"] * 5, "entailment"),
    ])
    _write(d / "QQP" / "train.tsv", [
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
        "133273\t213221\t213222\tHow is the life of a math student?\tWhich level of prepration is enough?\t0",
        "402555\t536040\t536041\tHow do I control my horny emotions?\tHow do you control your horniness?\t1",
        # a dirty row as in GLUE's QQP train: the question was cut by a line break
        "201841\t303951\t174364\tHow can I stop",
        "being sad?\t0",
        "360472\t364011\t490273\tWhat causes stool color to change?\tWhat can cause stool to come out as green?\t0",
    ])
    _write(d / "QQP" / "dev.tsv", [
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
        "201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so beautiful?\t0",
        '263843\t69383\t380476\tI want to pursue "PhD in Computer Science?\tI handle social media for a non-profit.\t0',
        "172974\t11022\t11023\tIs there a reason why we should travel alone?\tWhat are some reasons to travel alone?\t1",
    ])
    return d


def test_mnli_local(mnli_qqp_dir):
    tr = glue.load_split("mnli", "train", mnli_qqp_dir)
    assert tr.labels.tolist() == [1, 0, 2]  # neutral, entailment, contradiction in hub ids
    assert tr.text_a[1] == 'He said "yes.' and tr.text_b[1] == "He agreed."
    m = glue.load_split("mnli", "dev_matched", mnli_qqp_dir)
    mm = glue.load_split("mnli", "dev_mismatched", mnli_qqp_dir)
    assert m.labels.tolist() == [1, 0]  # gold_label (last column), not label1
    assert mm.labels.tolist() == [1, 2, 0]
    assert mm.text_a[0] == "Your gift is appreciated."
    assert glue.load_split("mnli", "dev", mnli_qqp_dir).labels.tolist() == m.labels.tolist()
    with pytest.raises(GlueDataError, match="no split"):
        glue.load_split("mnli", "test", mnli_qqp_dir)


def test_qqp_local_skips_dirty_rows(mnli_qqp_dir):
    tr = glue.load_split("qqp", "train", mnli_qqp_dir)
    assert len(tr) == 3 and tr.skipped == 2  # both halves of the broken row
    assert tr.labels.tolist() == [0, 1, 0]
    dev = glue.load_split("qqp", "dev", mnli_qqp_dir)
    assert len(dev) == 3 and dev.skipped == 0
    assert dev.text_a[1] == 'I want to pursue "PhD in Computer Science?'


# --- malformed input ---------------------------------------------------------------------------


def test_missing_dir_and_file(tmp_path):
    with pytest.raises(GlueDataError, match="directory"):
        glue.load_split("rte", "dev", tmp_path / "nope")
    with pytest.raises(GlueDataError, match=r"RTE.dev\.tsv does not exist"):
        glue.load_split("rte", "dev", tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_text("")
    with pytest.raises(GlueDataError, match="is empty"):
        glue.load_split("rte", "dev", tmp_path)


def test_missing_column(tmp_path):
    _write(tmp_path / "RTE" / "dev.tsv", ["index\tsentence1\tsentence2\tgold", "0\ta\tb\tentailment"])
    with pytest.raises(GlueDataError, match="no label column 'label'"):
        glue.load_split("rte", "dev", tmp_path)


def test_wrong_field_count_in_clean_task(tmp_path):
    _write(tmp_path / "SST-2" / "dev.tsv", ["sentence\tlabel", "fine film\t1", "broken\trow\t0"])
    with pytest.raises(GlueDataError, match=r"line 3 has 3 fields, expected 2"):
        glue.load_split("sst2", "dev", tmp_path)


def test_bad_labels(tmp_path):
    _write(tmp_path / "SST-2" / "dev.tsv", ["sentence\tlabel", "fine film\tpositive"])
    with pytest.raises(GlueDataError, match="has label 'positive'"):
        glue.load_split("sst2", "dev", tmp_path)
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    _write(tmp_path / "STS-B" / "dev.tsv", [header, "0\tg\tf\ty\t0\tn\tn\ta\tb\tfive"])
    with pytest.raises(GlueDataError, match="not a number"):
        glue.load_split("stsb", "dev", tmp_path)


def test_cola_header_file_is_rejected(tmp_path):
    # CoLA train/dev have 4 fields and no header; a 2-column file (like test.tsv) is not train data.
    _write(tmp_path / "CoLA" / "dev.tsv", ["index\tsentence", "0\tBill whistled."])
    with pytest.raises(GlueDataError, match="fields, expected 4"):
        glue.load_split("cola", "dev", tmp_path)


def test_unquoted_double_quotes_do_not_merge_rows(tmp_path):
    _write(tmp_path / "SST-2" / "dev.tsv", ["sentence\tlabel", '" a lone quote\t1', "next row\t0", 'he said "hi" twice\t1'])
    s = glue.load_split("sst2", "dev", tmp_path)
    assert s.text_a == ['" a lone quote', "next row", 'he said "hi" twice']
    assert s.labels.tolist() == [1, 0, 1]


def test_mrpc_bom(tmp_path):
    _write(tmp_path / "MRPC" / "dev.tsv", ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String", "1\t1\t2\tA b.\tC d."])
    s = glue.load_split("mrpc", "dev", tmp_path)
    assert (s.text_a, s.text_b, s.labels.tolist()) == (["A b."], ["C d."], [1])


# --- hub -------------------------------------------------------------------------------------


def test_hub_mapping():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"premise": ["p0", "p1"], "hypothesis": ["h0", "h1"], "label": [2, 0], "idx": [0, 1]}
    )
    s = glue.split_from_hub_dataset("mnli", "dev_matched", ds)
    assert (s.text_a, s.text_b, s.labels.tolist()) == (["p0", "p1"], ["h0", "h1"], [2, 0])
    assert s.labels.dtype == np.int64
    ds = datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [3.8], "idx": [0]})
    s = glue.split_from_hub_dataset("stsb", "train", ds)
    assert s.labels.dtype == np.float32 and s.labels[0] == pytest.approx(3.8)
    ds = datasets.Dataset.from_dict({"sentence": ["x"], "label": [-1], "idx": [0]})
    with pytest.raises(GlueDataError, match="outside"):
        glue.split_from_hub_dataset("sst2", "test", ds)
    with pytest.raises(GlueDataError, match="lacks column"):
        glue.split_from_hub_dataset("qqp", "dev", ds)


def test_hub_offline_fails_fast(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(GlueDataError, match="offline"):
        glue.load_split("sst2", "dev", None)


def test_default_glue_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(tmp_path))
    assert glue.default_glue_dir() == tmp_path
    monkeypatch.delenv("GLUE_DIR")
    # the library knows no checkout-relative location: a sibling ../shared/data/glue is not used
    (tmp_path / "shared" / "data" / "glue").mkdir(parents=True)
    work = tmp_path / "main"
    work.mkdir()
    monkeypatch.chdir(work)
    assert glue.default_glue_dir() is None


# --- subsetting and tokenization ---------------------------------------------------------------


def _toy_split(labels, task="sst2"):
    labels = np.asarray(labels)
    return glue.GlueSplit(task=task, split="train", text_a=[f"s{i}" for i in range(len(labels))], text_b=None, labels=labels)


def test_subsample_stratified():
    labels = np.array([0] * 70 + [1] * 30, dtype=np.int64)
    s = _toy_split(labels)
    a = glue.subsample(s, 10, np.random.default_rng(5))
    b = glue.subsample(s, 10, np.random.default_rng(5))
    c = glue.subsample(s, 10, np.random.default_rng(6))
    assert len(a) == 10 and np.bincount(a.labels).tolist() == [7, 3]
    assert a.text_a == b.text_a and a.text_a != c.text_a
    idx = [int(x[1:]) for x in a.text_a]
    assert idx == sorted(idx) and len(set(idx)) == 10  # order kept, no repeats
    # Largest remainder: 11 of (70, 30) -> quotas 7.7 and 3.3 -> 8 and 3.
    assert np.bincount(glue.subsample(s, 11, np.random.default_rng(0)).labels).tolist() == [8, 3]
    assert glue.subsample(s, None, np.random.default_rng(0)) is s
    assert glue.subsample(s, 1000, np.random.default_rng(0)) is s
    with pytest.raises(ValueError):
        glue.subsample(s, 0, np.random.default_rng(0))


def test_subsample_regression_plain_random():
    s = _toy_split(np.linspace(0, 5, 50, dtype=np.float32), task="stsb")
    a = glue.subsample(s, 20, np.random.default_rng(1))
    assert len(a) == 20 and len(set(a.text_a)) == 20


def test_tokenize_dynamic_padding(tmp_path):
    transformers = pytest.importorskip("transformers")
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]) + "\n")
    tok = transformers.BertTokenizerFast.from_pretrained(str(tmp_path))
    s = glue.GlueSplit(task="rte", split="dev", text_a=["a", "a b c a b c a b c a b c"], text_b=["b c", "c"], labels=np.array([0, 1]))
    enc = glue.tokenize(s, tok, max_length=8)
    assert enc.lengths.tolist() == [6, 8]  # [CLS] a [SEP] b c [SEP]; the long one truncated
    b0 = enc.batch([0])
    assert b0["input_ids"].shape == (1, 6)
    b = enc.to_tensors()
    assert b["input_ids"].shape == (2, 8)
    assert b["input_ids"][0, 6:].tolist() == [0, 0] and b["attention_mask"][0].tolist() == [1] * 6 + [0, 0]
    assert b["token_type_ids"][0].tolist() == [0, 0, 0, 1, 1, 1, 0, 0]
    assert b["labels"].tolist() == [0, 1]
    with pytest.raises(ValueError):
        glue.tokenize(s, tok, max_length=2)


# --- dev files must be complete; training files may skip bad rows -------------------------------


def test_qqp_dev_with_malformed_rows_is_refused_with_line_numbers(mnli_qqp_dir):
    dev = mnli_qqp_dir / "QQP" / "dev.tsv"
    rows = dev.read_text().splitlines()
    rows.insert(2, "201842\t303952\tHow can I stop")  # a row cut by a line break, as in QQP train
    rows.insert(3, "being sad?\t0")
    rows.append("172975\t11024\t11025\tIs it?\tIs it not?\tmaybe")  # unknown label
    dev.write_text("\n".join(rows) + "\n")
    with pytest.raises(GlueDataError, match=r"3 malformed row\(s\) at line\(s\) 3, 4, 7") as e:
        glue.load_split("qqp", "dev", mnli_qqp_dir)
    assert "label 'maybe'" in str(e.value) and "must be complete" in str(e.value)
    tr = glue.load_split("qqp", "train", mnli_qqp_dir)  # training file: skipped and counted
    assert tr.skipped == 2


@pytest.mark.parametrize("task,rows", [
    ("sst2", ["sentence\tlabel", "fine film \t1", "dull \t0"]),
    ("rte", ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailment", "1\tc\td\tnot_entailment"]),
    ("cola", ["gj04\t1\t\tThe sailors rode the breeze clear of the rocks.", "gj04\t0\t*\tThe more books."]),
])
def test_utf8_bom_in_any_task_file(tmp_path, task, rows):
    t = glue.get_task(task)
    p = tmp_path / t.dir_name / "dev.tsv"
    p.parent.mkdir(parents=True)
    p.write_bytes(("\ufeff" + "\n".join(rows) + "\n").encode("utf-8"))
    s = glue.load_split(task, "dev", tmp_path)
    assert len(s) == 2 and not s.text_a[0].startswith("\ufeff")


def test_non_utf8_file_is_a_glue_error(tmp_path):
    p = tmp_path / "SST-2" / "dev.tsv"
    p.parent.mkdir(parents=True)
    p.write_bytes(b"sentence\tlabel\nna\xefve \t1\n")
    with pytest.raises(GlueDataError, match="not UTF-8"):
        glue.load_split("sst2", "dev", tmp_path)


def test_unknown_task_is_a_glue_error():
    with pytest.raises(GlueDataError, match="unknown GLUE task 'nosuch'"):
        glue.get_task("nosuch")
