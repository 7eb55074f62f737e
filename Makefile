# Two commands on a fresh machine that has only Python, pip and gcc: `make plan` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STACK ?= eval

.PHONY: plan test test-fast install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[aws,gcp,test]'
	touch $@

install: $(VENV)/.installed

plan: install
	$(PY) scripts/plan.py --stack $(STACK)

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not server"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
