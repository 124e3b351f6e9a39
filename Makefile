# The kit's single entry point. Every target sets itself up from nothing into ./.venv.
#
#   make reproduce   execute every notebook in notebooks/ in order (executed/ + figures/)
#   make test        the test suite (unit tests, notebook lint, every notebook at CI sizes)
#   make setup       only build/refresh ./.venv
#
# The virtual environment is rebuilt only when pyproject.toml is newer than .venv/.stamp.

PYTHON ?= python3
VENV := .venv
VENV_BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.stamp
PIP := $(VENV_BIN)/pip --disable-pip-version-check
# Every command runs with the venv first on PATH, so that the Jupyter kernel papermill starts
# ("python3", argv "python -m ipykernel_launcher") is the venv's interpreter, whatever else is on PATH;
# JUPYTER_PREFER_ENV_PATH makes Jupyter prefer the venv's kernelspecs over a user-level "python3" one.
IN_VENV := env PATH="$(VENV_BIN):$$PATH" JUPYTER_PREFER_ENV_PATH=1 VIRTUAL_ENV="$(CURDIR)/$(VENV)"
# sam2 is a source package: build it without its CUDA extension (only used by optional post-processing).
export SAM2_BUILD_CUDA := 0
# Arguments for the notebook runner, e.g. make reproduce ARGS="--only 00"
ARGS ?=
# Arguments for pytest, e.g. make test PYTEST_ARGS="-m 'not notebooks'"
PYTEST_ARGS ?=

.PHONY: reproduce test setup clean help

help:
	@echo "make reproduce   execute every notebook in notebooks/ (executed copies in executed/, figures in figures/)"
	@echo "make test        run the test suite (includes every notebook at the CI sizes)"
	@echo "make setup       create or refresh the virtual environment ./$(VENV)"
	@echo "make clean       remove executed notebooks and pytest caches (keeps ./$(VENV))"

setup: $(STAMP)

# torch first, so that sam2 (a source package whose build imports torch) builds against it without
# build isolation (which would install a second copy of torch just to build a pure-Python wheel).
$(STAMP): pyproject.toml
	@echo ">>> setting up ./$(VENV) (first time: about 3-5 minutes on a 2-core CPU)"
	@test -x $(VENV_BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 'setuptools>=77' wheel
	$(PIP) install -q 'torch>=2.5.1' 'torchvision>=0.20.1'
	$(PIP) install -q --no-build-isolation 'sam2==1.1.0'
	$(PIP) install -q -e '.[dev]'
	@touch $(STAMP)
	@echo ">>> ./$(VENV) is ready"

reproduce: $(STAMP)
	$(IN_VENV) python -m salma reproduce --out executed $(ARGS)

test: $(STAMP)
	$(IN_VENV) python -m pytest tests $(PYTEST_ARGS)

clean:
	rm -rf executed .pytest_cache
