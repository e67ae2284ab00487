"""Execute the notebooks of examples/notebooks (jupytext percent scripts) and write each, with
its outputs, as ``OUT/<name>.ipynb``; their figures and tables are written into ``OUT`` too.

    python examples/run_notebooks.py [--out out/notebooks] [NAME ...]     # what `make notebooks` runs

Each runs in a fresh Jupyter kernel (nbclient) whose working directory is ``OUT``, with the
repository on ``PYTHONPATH`` (so it also runs from a checkout that is not pip-installed).
``tests/test_notebooks.py`` runs them through :func:`run_notebook` too. Needs the ``notebooks``
extra (``pip install -e '.[notebooks]'``; ``make install`` includes it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "examples" / "notebooks"


def notebooks() -> list[Path]:
    """The notebooks, as their jupytext percent scripts."""
    return sorted(NOTEBOOK_DIR.glob("*.py"))


def run_notebook(path: Path, workdir: Path, timeout_s: float = 1200.0, out: Path | None = None):
    """Execute the notebook ``path`` in a Jupyter kernel started in ``workdir``; return the executed
    notebook (``nbformat.NotebookNode``) and write it to ``out`` when given."""
    import jupytext
    import nbclient
    import nbformat

    nb = jupytext.read(path)
    env_path = os.environ.get("PYTHONPATH", "")
    if str(ROOT) not in env_path.split(os.pathsep):
        os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + env_path if env_path else "")
    os.environ.setdefault("MPLBACKEND", "Agg")
    client = nbclient.NotebookClient(nb, timeout=int(timeout_s), kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    if out is not None:
        from device.io import atomic_path

        with atomic_path(out) as tmp:
            nbformat.write(nb, str(tmp))
    return nb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "notebooks", help="where the executed notebooks go")
    ap.add_argument("names", nargs="*", help="notebook names (default: all of examples/notebooks)")
    args = ap.parse_args(argv)
    paths = notebooks()
    if args.names:
        known = {p.stem: p for p in paths}
        missing = [n for n in args.names if n not in known]
        if missing:
            print(f"error: no notebook {', '.join(missing)} (have: {', '.join(known)})", file=sys.stderr)
            return 2
        paths = [known[n] for n in args.names]
    args.out.mkdir(parents=True, exist_ok=True)
    for p in paths:
        t0 = time.perf_counter()
        print(f"{p.name} ...", flush=True)
        run_notebook(p, args.out, out=args.out / f"{p.stem}.ipynb")
        print(f"  -> {args.out / (p.stem + '.ipynb')} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
