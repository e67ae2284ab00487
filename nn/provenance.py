"""What produced a result: content hashes of the model weights, the evaluated data and every table.

A results row (:mod:`nn.evaluate`) is keyed by the *content* of what produced it, the way
content-addressed caches (DVC, the Hugging Face hub cache) key their entries:

* the model: sha256 of the weight files (``*.safetensors``, ``*.bin``) and of the files that
  decide how they are used (``config.json``, the tokenizer files), :func:`model_digest`;
* the evaluated data: sha256 of the GLUE TSV file (for the hub copy, of the loaded rows),
  :func:`data_digest`;
* every table the simulated chip reads: the level table (``levels.source="table"``), the IR-drop
  table (``crossbar.ir_drop="table"``) and any other table or map a config names by path (a
  string field whose name ends in ``path``, ``table``, ``map`` or ``file``: relaxation tables,
  fault maps), :func:`table_digests`;
* the software version (:func:`device.io.software_version`).

Re-fine-tuning into the same model directory, pointing ``--glue-dir`` at other data, replacing a
table in place or upgrading the toolkit therefore gives new keys: the old rows stay in the file
but no longer count as done for the new run. Hashes are cached per process by
``(path, size, mtime_ns)``, so a study hashes each file once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from device.data import data_dir, resolve_table

__all__ = ["file_sha256", "model_digest", "data_digest", "table_digests", "check_tables", "TABLE_FIELD_SUFFIXES"]

#: a string field of a sim config whose name ends in one of these names a file that decides results
TABLE_FIELD_SUFFIXES = ("path", "table", "map", "file")

#: model-directory files that decide a model's outputs (weights, architecture, tokenizer);
#: ``smallnet.json`` is the architecture of the toolkit's own small nets (nn.smallnets)
_MODEL_FILES = (
    "config.json", "smallnet.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
    "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "added_tokens.json",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")

_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, cached per process by ``(path, size, mtime_ns)``."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    h = _CACHE.get(key)
    if h is None:
        d = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                d.update(block)
        h = d.hexdigest()
        _CACHE[key] = h
    return h


def _digest_files(files: list[Path], root: Path) -> str:
    d = hashlib.sha256()
    for f in sorted(files):
        d.update(f"{f.relative_to(root).as_posix()}\0{file_sha256(f)}\n".encode())
    return d.hexdigest()


def model_digest(model: str | os.PathLike) -> str:
    """``sha256:<hex>`` over a model directory's weight, config and tokenizer files (names and
    contents; ``pruning_masks.safetensors`` counts as weights). A hub id is looked up in the
    local hub cache; a hub id that is not cached gives ``hub:<id>`` (keyed by name only). A
    small-net directory (``smallnet.json``, :mod:`nn.smallnets`) is hashed the same way."""
    from nn.models import resolve_model_dir

    p = Path(model).expanduser()
    where = p if (p / "smallnet.json").is_file() else Path(resolve_model_dir(model))
    if not where.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache

            cfg = try_to_load_from_cache(str(model), "config.json")
        except Exception:  # noqa: BLE001 - no hub library or a malformed id: keyed by name
            cfg = None
        if not isinstance(cfg, str):
            return f"hub:{model}"
        where = Path(cfg).parent
    files = [
        f for f in where.iterdir()
        if f.is_file() and (f.name in _MODEL_FILES or f.suffix in _WEIGHT_SUFFIXES)
    ]
    return "sha256:" + _digest_files(files, where)


def data_digest(split: Any) -> str:
    """``sha256:<hex>`` of the file a :class:`nn.glue.GlueSplit` was read from, or of its rows
    (texts and labels) when it came from the hub."""
    src = Path(split.source) if split.source else None
    if src is not None and src.is_file():
        return "sha256:" + file_sha256(src)
    import numpy as np

    d = hashlib.sha256()
    for col in (split.text_a, split.text_b or []):
        for s in col:
            d.update(s.encode("utf-8") + b"\0")
        d.update(b"\1")
    d.update(np.ascontiguousarray(split.labels).tobytes())
    return "sha256:" + d.hexdigest()


def _table_fields(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted key, path)`` of every non-empty string field named like a table or map path."""
    out: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                out += _table_fields(v, key + ".")
            elif isinstance(v, str) and v and str(k).endswith(TABLE_FIELD_SUFFIXES):
                out.append((key, v))
    return out


def table_paths(sim_cfg: Any) -> dict[str, Path]:
    """``{role: path}`` of every table file ``sim_cfg`` reads: the level table when
    ``levels.source="table"`` (the shipped one when no path is given), the IR-drop table when
    ``crossbar.ir_drop="table"``, the relaxation table when ``crossbar.read_time_s > 0`` (the
    shipped one when no path is given), and every other path-named field (see the module
    docstring)."""
    from nn.sim import level_table_path

    out: dict[str, Path] = {}
    if sim_cfg.levels.source == "table":
        lp = sim_cfg.levels.table_path
        out["levels.table_path"] = resolve_table(lp) if lp else level_table_path(sim_cfg.crossbar.bits_per_cell)
    if sim_cfg.crossbar.ir_drop == "table":
        ip = sim_cfg.irdrop_table
        out["irdrop_table"] = resolve_table(ip) if ip else data_dir() / "irdrop_default.h5"
    relax = getattr(sim_cfg, "relaxation", None)
    if relax is not None and getattr(sim_cfg.crossbar, "read_time_s", 0) > 0:
        rp = relax.table_path
        out["relaxation.table_path"] = (
            resolve_table(rp) if rp else data_dir() / "relaxation_techB.h5"
        )
    for key, p in _table_fields(sim_cfg.to_dict()):
        if key not in out and key not in ("levels.table_path", "irdrop_table", "relaxation.table_path"):
            out[key] = Path(p)
    return out


def table_digests(sim_cfg: Any) -> dict[str, str]:
    """``{role: "sha256:<hex>"}`` of every table ``sim_cfg`` reads (see :func:`table_paths`).
    A missing file raises :class:`device.tables.TableError`."""
    from device.tables import TableError

    out = {}
    for role, p in sorted(table_paths(sim_cfg).items()):
        if not p.is_file():
            raise TableError(f"{role}: table {p} does not exist")
        out[role] = "sha256:" + file_sha256(p)
    return out


_CHECKED: set[tuple[str, ...]] = set()


def check_tables(sim_cfg: Any) -> dict[str, str]:
    """Load and validate every table ``sim_cfg`` reads, before any evaluation (a bad table fails
    first, not after the digital pass); returns :func:`table_digests`. The level and IR-drop
    tables are loaded as the chip will load them (bits per cell checked); other tables are
    checked with :func:`device.tables.validate`. Each file is checked once per process."""
    from device.tables import validate
    from nn.sim import build_levels, load_irdrop

    digests = table_digests(sim_cfg)
    for role, p in table_paths(sim_cfg).items():
        key = (role if role != "levels.table_path" else f"{role}:{sim_cfg.crossbar.bits_per_cell}", digests[role])
        if role == "relaxation.table_path":  # checked against this config's levels, read time and rules
            c = sim_cfg.crossbar
            key += (json.dumps([sim_cfg.levels.to_dict(), digests.get("levels.table_path"), c.bits_per_cell, c.read_time_s,
                                c.retention.to_dict(), sim_cfg.relaxation.out_of_range], sort_keys=True),)
        if key in _CHECKED:
            continue
        if role == "levels.table_path":
            build_levels(sim_cfg)
        elif role == "irdrop_table":
            load_irdrop(sim_cfg)
        elif role == "relaxation.table_path":
            from nn.sim import check_relaxation_range

            check_relaxation_range(sim_cfg)
        else:
            validate(p)
        _CHECKED.add(key)
    return digests
