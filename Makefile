# Every target creates the virtualenv on demand, so `make run` and `make test`
# work on a fresh clone with nothing but python3 (with venv) installed.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest pytest-redis fmt bench soak clean install-service

# `make run` installs only what running needs; the dev tools (pytest, mypy, ruff,
# schemathesis) come with the first target that uses them.
$(RUN_STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/m3u-proxy

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# The same suite with Redis as the store (REDIS_URL), on a throwaway redis-server.
pytest-redis: $(STAMP)
	$(BIN)/python -m tests.redisd $(BIN)/pytest

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	@set -e; for script in bench/[!_]*.py; do \
		[ "$$script" = bench/soak.py ] && continue; \
		echo "== $$script"; $(BIN)/python $$script $(BENCH_ARGS); \
	done

# Minutes of viewers, zaps and failovers; not part of `make bench` or `make test`.
soak: $(STAMP)
	$(BIN)/python bench/soak.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis

# Install as a systemd service; run as root: `sudo make install-service`. Creates the
# /opt/m3u-proxy virtualenv and installs this checkout into it (`pip install .`),
# copies contrib/m3u-proxy.service to /etc/systemd/system, puts the example environment
# file at /etc/m3u-proxy/m3u-proxy.env unless one exists (config.example.toml goes next
# to it), and runs `systemctl daemon-reload`. Start it with
# `systemctl enable --now m3u-proxy`. Never run by `make test`.
install-service:
	$(PY) -m venv /opt/m3u-proxy
	/opt/m3u-proxy/bin/pip install --quiet --upgrade pip
	/opt/m3u-proxy/bin/pip install --quiet --upgrade .
	install -d -m 0755 /etc/m3u-proxy
	test -e /etc/m3u-proxy/m3u-proxy.env || \
		install -m 0600 contrib/m3u-proxy.env /etc/m3u-proxy/m3u-proxy.env
	install -m 0644 config.example.toml /etc/m3u-proxy/config.example.toml
	install -m 0644 contrib/m3u-proxy.service /etc/systemd/system/m3u-proxy.service
	@if [ -d /run/systemd/system ]; then \
		systemctl daemon-reload; \
		echo "installed; start it with: systemctl enable --now m3u-proxy"; \
	else \
		echo "installed the files, but systemd is not running here (not PID 1: a container?)."; \
		echo "On a systemd host run: systemctl daemon-reload && systemctl enable --now m3u-proxy"; \
	fi
