# The two commands of the README, and a few more. Every target installs what it needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test study lab clean-outputs

$(VENV)/.installed: pyproject.toml requirements-lock.txt scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

setup: $(VENV)/.installed

## test: the whole test suite at the smallest params (what CI runs)
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

## study: the whole default study end to end (CPU-sized, embedded data), into outputs/
study: setup
	$(PY) -m mt5study.cli study

## lab: JupyterLab with the project's kernel
lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

clean-outputs:
	rm -rf outputs/*/
