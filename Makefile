# The two commands of the README: `make run` (set up, migrate, seed demo data, start) and `make test`;
# `make test-fast` and `make lint` for the development loop (see CONTRIBUTING.md).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3.11

.PHONY: setup run test test-fast browser pacs-deps dicom-tools lint

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	touch $@

run: setup
	$(PY) -m core db upgrade
	$(PY) -m core seed --if-empty
	$(VENV)/bin/streamlit run serve.py

# Debian's chromium drives the browser tests (Playwright never downloads a browser here).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# Debian's Orthanc with its DICOMweb plugin: the throwaway PACS of tests/test_pacs.py (and the README's demo PACS).
pacs-deps:
	@test -x /usr/sbin/Orthanc -a -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so || \
		(apt-get update -qq && apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null)

# Debian's dicom3tools: dciodvfy validates the DICOM SR and secondary capture in tests/test_sr.py (skipped without).
dicom-tools:
	@command -v dciodvfy >/dev/null || (apt-get update -qq && apt-get install -y -qq dicom3tools >/dev/null)

test: setup browser pacs-deps dicom-tools
	$(PY) -m pytest

# The inner loop: everything but the model-training (`slow`) and real-browser tests, both databases, on every
# core (pytest-xdist; each worker migrates its own SQLite file and PostgreSQL schema).
test-fast: setup
	$(PY) -m pytest -n auto -m "not slow and not browser"

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy core db pages ui app.py
