# The two commands of the README:
#   make run    set everything up in ./.venv and run the project in ./loom.toml
#   make test   set everything up and run every check: cargo fmt/clippy/test, ruff,
#               mypy, stubtest, pytest, and the benchmarks as a short smoke run
# Both are idempotent; a second run only rebuilds what changed.

VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run test setup lint rust-test py-test bench-smoke bench clean

setup:
	@./scripts/bootstrap.sh

run: setup
	$(BIN)/loom run

test: setup lint rust-test py-test bench-smoke
	@echo "all checks passed"

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --features python --lib -- -D warnings
	$(BIN)/ruff check python tests benchmarks examples
	$(BIN)/ruff format --check python tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest loom._core --allowlist .ci/stubtest-allowlist.txt

rust-test:
	cargo test --all-targets

py-test:
	$(BIN)/python -m pytest -q

bench-smoke:
	@for b in benchmarks/*.py; do echo "== $$b --smoke"; $(BIN)/python $$b --smoke || exit 1; done

bench:
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) target .loom
