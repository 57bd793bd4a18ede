# The two commands of the README: `make demo` and `make test`.
# Both set up what they need: system packages (apt-get, as root) and a virtualenv in .venv.
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := siaga siaga_core ingest rules devices simulators reports

.PHONY: demo test setup system lint faults bench

demo: setup
	$(BIN)/siaga demo

test: setup lint
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check $(PACKAGES) tests
	$(BIN)/mypy
	$(BIN)/lint-imports

setup: system $(VENV)/.installed

system:
	@scripts/ensure-system-packages

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The long fault suite (about an hour, with a 30-minute soak); `make test` runs the short one.
faults: setup
	SIAGA_FAULTS=long SIAGA_FAULTS_REPORT=faults-long.jsonl $(BIN)/pytest tests/faults -q

# The benchmarks (bench/README.md): `make bench BENCH_ARGS=--quick` for a short smoke run.
bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	@test -f bench/.node/node_modules/node-red/red.js || $(BIN)/python -m bench --setup-node-red
	$(BIN)/python -m bench $(BENCH_ARGS)
