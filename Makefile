# `make demo` and `make test` each do their own set-up on a fresh machine: create .venv, install, run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.headstart-installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m service.demo

# pytest exits 5 when it collects nothing: that is a failure here too, said plainly.
test: $(STAMP)
	$(PY) -m ruff check extractor classifiers service tests bench
	$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$rc

lint: $(STAMP)
	$(PY) -m ruff check extractor classifiers service tests bench

bench: $(STAMP)
	$(PY) bench/bench_extract.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
