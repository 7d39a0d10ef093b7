# Every target sets itself up: a virtualenv in the clone, Debian's Fashion-MNIST when running as root.
PY      := .venv/bin/python
HASHAE  := .venv/bin/hashae
DATA    := /usr/share/datasets/fashion-mnist
DEMO    := demo

.PHONY: setup data demo scale-demo test test-all bench clean

# pip's output goes to .venv/pip.log and is shown only when an install fails.
PIP     := $(PY) -m pip install --quiet --disable-pip-version-check

.venv/.installed: pyproject.toml
	@echo "setting up .venv (torch 2.13.0 CPU, hashae and its test extras; log in .venv/pip.log)"
	@python3 -m venv .venv
	@$(PIP) --upgrade pip > .venv/pip.log 2>&1 || { cat .venv/pip.log; exit 1; }
	@$(PIP) torch==2.13.0 >> .venv/pip.log 2>&1 || { cat .venv/pip.log; exit 1; }
	@$(PIP) -e '.[test,bench]' >> .venv/pip.log 2>&1 || { cat .venv/pip.log; exit 1; }
	@touch $@

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
	@echo
	@echo "Next: $(HASHAE) serve --store $(DEMO)/store          (a web page at http://127.0.0.1:8000)"
	@echo "      $(HASHAE) query YOUR_IMAGE.png --store $(DEMO)/store --mode hybrid"
	@echo "      $(HASHAE) duplicates --store $(DEMO)/store"
	@echo "      make scale-demo   (the same path on a local Ray cluster, Milvus Lite and 2-process DDP)"

# The whole past-one-machine path, locally: a private Ray cluster encodes, Milvus Lite stores,
# 2-process DDP (gloo) trains. Slower than `make demo` on one small machine; it shows the path works.
scale-demo: setup
	$(HASHAE) datasets export fashion-mnist $(DEMO)/images --split train --limit 6000
	rm -rf $(DEMO)/store-scale
	RAY_AUTH_MODE=disabled $(HASHAE) index $(DEMO)/images --store $(DEMO)/store-scale --backend milvus --executor ray --nproc 2
	$(HASHAE) query $(DEMO)/images/Sneaker/train_00006.png -k 5 --store $(DEMO)/store-scale
	$(HASHAE) info --store $(DEMO)/store-scale

# One BLAS/OpenMP thread: the tests' nets are tiny, and spare threads only spin on a busy machine.
test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest

test-all: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -m ''

bench: setup
	$(HASHAE) bench --json $(DEMO)/bench.json --plot $(DEMO)/bench.png

clean:
	rm -rf .venv $(DEMO) .pytest_cache
