# The two commands of the README's quick start, and the install they share.
# `make demo` runs the main job on an embedded default; `make test` runs the
# tests. Both install what they need first (torch, the package and its
# compiled kernels); the install is redone only when the sources change.

PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMP := build/.installed-$(notdir $(PYTHON))
SOURCES := setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/*.cpp csrc/cuda/*.cu)

.PHONY: install demo test bench clean

install: $(STAMP)

# torch comes first: the extension builds against the installed torch
# (--no-build-isolation), so it must be there before setup.py runs.
$(STAMP): $(SOURCES)
	$(PIP) install --quiet "torch>=2.6" "setuptools>=77" ninja
	$(PIP) install --quiet --no-build-isolation -e ".[test,bench]"
	@mkdir -p build && touch $@

demo: install
	$(PYTHON) benchmarks/bench_transfer_rows.py --quick

test: install
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) benchmarks/bench_transfer_rows.py

clean:
	rm -rf build dist *.egg-info vocabxfer/_C*.so
