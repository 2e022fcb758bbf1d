# Two commands for a fresh machine:
#   make run    create .venv on first use, install, run every job on its embedded default
#   make test   create/update .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint install bench clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/riskdask run all

# Debian packages the tests use: chromium (report.html checked in a headless browser),
# openssh-server (a real sshd on 127.0.0.1 for the SSH cluster test) and iproute2 (`ip netns`
# for the multi-host test in network namespaces). Installed when missing;
# that needs root (CI runs as root); anyone else gets the command to run.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	{ command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; } || missing="$$missing openssh-server"; \
	{ command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ]; } || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing (apt-get)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q && apt-get install -y -q$$missing || exit 1; \
	  else \
	    echo "make test needs the Debian packages:$$missing" >&2; \
	    echo "install them once with:  sudo apt-get install -y$$missing  (then rerun make test)" >&2; \
	    exit 1; \
	  fi; \
	fi

# ruff: the rule set in pyproject.toml ([tool.ruff]); CI runs it before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
