# Two commands on a fresh machine that has only Python, pip and gcc: `make plan` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# checkov has its own virtualenv: its pinned dependencies would fight the Pulumi SDK's.
TOOLS := .venv-tools
CHECKOV_VERSION := 3.3.30
STACK ?= eval

.PHONY: plan test test-fast install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[aws,gcp,test]'
	touch $@

$(TOOLS)/.installed:
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS) || python3 -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $@

install: $(VENV)/.installed $(TOOLS)/.installed

plan: install
	$(PY) scripts/plan.py --stack $(STACK)

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not server"

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .hypothesis
