# The README's two set-up commands are `make demo` and `make test`.
# Both install what a fresh Debian machine lacks, and are quick when already set up.

VENV    := .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
APT_PKGS_RUN  := nmap
# systemd: tests/test_packaging.py checks docs/portconsole.service with systemd-analyze
# redis-server: tests/test_sites.py runs real site workers through a loopback Redis
APT_PKGS_TEST := nmap tmux chromium systemd iptables iproute2 redis-server

.PHONY: demo test check lint typecheck unit apt-run apt-test clean

demo: apt-run $(VENV)/.runtime-installed
	$(BIN)/portconsole demo

test: apt-test $(VENV)/.dev-installed
	$(MAKE) --no-print-directory check

check: lint typecheck unit

lint:
	$(BIN)/ruff check portconsole tests bench
	$(BIN)/ruff format --check portconsole tests bench
	$(BIN)/lint-imports

typecheck:
	$(BIN)/mypy

unit:
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --maxschedchunk=1

# Debian packages: as root use apt-get directly; otherwise sudo; otherwise say what to install.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	$(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing Debian packages:$$missing -- run 'apt-get install$$missing' as root, then rerun"; exit 2; fi; \
	fi
endef

apt-run:
	$(call apt_install,$(APT_PKGS_RUN))

apt-test:
	$(call apt_install,$(APT_PKGS_TEST))

$(VENV)/bin/pip:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.runtime-installed: pyproject.toml | $(VENV)/bin/pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(VENV)/bin/pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.runtime-installed

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
