# `make demo` and `make test` each do their own set-up on a fresh machine: create .venv, install, run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.headstart-installed

.PHONY: demo test lint bench clean browser screenshots

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m service.demo

# The page's tests drive Debian's Chromium (tests/ui). Installed here when missing (apt-get; sudo when not root);
# when it cannot be, `make test` stops with the reason instead of skipping them.
browser:
	@if [ -n "$$HEADSTART_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; \
	then exit 0; fi; \
	echo "installing Debian's chromium for the browser tests (apt-get)"; \
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium ) \
	  || { echo "make test: the browser tests need Chromium and it could not be installed; run" \
	    "'apt-get install chromium' or set HEADSTART_CHROMIUM to a Chromium binary" >&2; exit 1; }

# pytest exits 5 when it collects nothing: that is a failure here too, said plainly.
test: $(STAMP) browser
	$(PY) -m ruff check extractor classifiers service tests bench
	$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$rc

# The README's pictures of the page, taken by its browser tests.
screenshots: $(STAMP) browser
	HEADSTART_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q -p no:cacheprovider tests/ui

lint: $(STAMP)
	$(PY) -m ruff check extractor classifiers service tests bench

bench: $(STAMP)
	$(PY) bench/bench_extract.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
