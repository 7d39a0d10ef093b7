# Every target sets itself up: a virtualenv in the clone, Debian's Fashion-MNIST when running as root.
PY      := .venv/bin/python
HASHAE  := .venv/bin/hashae
DATA    := /usr/share/datasets/fashion-mnist
DEMO    := demo

.PHONY: setup data demo test test-all bench clean

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: .venv/.installed data

data:
	@if [ ! -f $(DATA)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist'"; exit 1; fi; fi

demo: setup
	$(HASHAE) datasets export fashion-mnist $(DEMO)/images --split train --limit 6000
	$(HASHAE) index $(DEMO)/images --store $(DEMO)/store
	$(HASHAE) query $(DEMO)/images/Sneaker/train_00006.png $(DEMO)/images/Bag/train_00035.png -k 5 --store $(DEMO)/store
	$(HASHAE) info --store $(DEMO)/store

# One BLAS/OpenMP thread: the tests' nets are tiny, and spare threads only spin on a busy machine.
test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest

test-all: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -m ''

bench: setup
	$(HASHAE) bench --json $(DEMO)/bench.json --plot $(DEMO)/bench.png

clean:
	rm -rf .venv $(DEMO) .pytest_cache
