# Two commands do all the set-up on a fresh machine: `make run` (the station) and `make test` (the suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench bench-accuracy package clean-venv

$(STAMP): requirements.txt requirements-dev.txt packaging/requirements-package.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned to the CPU wheel, so nothing later can pull a CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements-dev.txt
	# PyInstaller too: the test suite builds and installs the package (tests/test_packaging.py)
	$(PY) -m pip install --quiet -r packaging/requirements-package.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	# the MQTT broker the line-output tests talk to (Debian's mosquitto), when missing and root may install it
	sh tests/install_peers.sh
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/station

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

bench: $(STAMP)
	$(PY) -m training.bench
	QT_QPA_PLATFORM=offscreen $(PY) -m station.qt.bench_station --out docs/BENCHMARKS.md
	QT_QPA_PLATFORM=offscreen $(PY) -m station.qt.bench_parts --minutes 10 --out docs/BENCHMARKS.md

# accuracy on every MVTec-layout image set under ../shared/datasets, defaults and ablations (about an hour)
bench-accuracy: $(STAMP)
	$(PY) -m training.bench_accuracy --out docs/BENCHMARKS.md

# dist/inspection-station-<version>-linux-x86_64.tar.gz (see docs/PACKAGING.md)
package: $(STAMP)
	$(PY) packaging/build.py

clean-venv:
	rm -rf $(VENV)
