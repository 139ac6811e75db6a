# Confidant: the two commands a newcomer needs are `make run` and `make test`.

CARGO ?= cargo
PG_URL ?= postgres://postgres@127.0.0.1:5432/postgres
export CONFIDANT_TEST_POSTGRES_URL ?= $(PG_URL)

.PHONY: run test test-clients bench microbench fuzz openapi fmt lint clean-db help

help:
	@echo "make run      start Confidant on sqlite://confidant.db at http://127.0.0.1:8080"
	@echo "make test     run every test (PostgreSQL half skipped, with a notice, if it is not running)"
	@echo "make test-clients  only the real-client tests (Node 20, Python 3)"
	@echo "make bench    load-test the release build over loopback (BENCH_ARGS=\"--postgres URL --scale\")"
	@echo "make microbench  criterion benchmarks of the hot paths"
	@echo "make fuzz     schemathesis against openapi.json on SQLite and PostgreSQL (FUZZ_SECONDS=90 per run)"
	@echo "make openapi  regenerate openapi/openapi.json from the code"
	@echo "make lint     rustfmt and clippy"

# Starts the service on its embedded default: a SQLite file and the built-in `echo` model.
# A development operator is created unless you set CONFIDANT_ADMIN_EMAIL/PASSWORD yourself.
run:
	@if [ -z "$$CONFIDANT_ADMIN_EMAIL" ]; then \
	  echo "make run: development operator admin@example.com / confidant-dev-password (set CONFIDANT_ADMIN_EMAIL and CONFIDANT_ADMIN_PASSWORD to choose your own)"; \
	fi
	CONFIDANT_ADMIN_EMAIL=$${CONFIDANT_ADMIN_EMAIL:-admin@example.com} \
	CONFIDANT_ADMIN_PASSWORD=$${CONFIDANT_ADMIN_PASSWORD:-confidant-dev-password} \
	$(CARGO) run --release --bin confidant -- serve

# Runs the whole suite on SQLite and PostgreSQL. Without a reachable PostgreSQL the PostgreSQL
# tests are skipped and this says so (CI sets CONFIDANT_REQUIRE_POSTGRES=1 to fail instead).
test:
	@if ! pg_isready -q -d "$(CONFIDANT_TEST_POSTGRES_URL)" 2>/dev/null && \
	    ! (command -v psql >/dev/null && psql "$(CONFIDANT_TEST_POSTGRES_URL)" -Atc 'select 1' >/dev/null 2>&1); then \
	  echo "!! PostgreSQL is not reachable at $(CONFIDANT_TEST_POSTGRES_URL): the PostgreSQL tests will be SKIPPED."; \
	  echo "!! Start it (see README) or set CONFIDANT_TEST_POSTGRES_URL to run them."; \
	  touch .postgres-skipped; \
	else rm -f .postgres-skipped; fi
	# The MCP tests start a real MCP server (the official Python SDK) from this environment.
	tests/mcp/setup
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --no-fail-fast; \
	else \
	  $(CARGO) test --workspace --no-fail-fast; \
	fi
	# The benchmarks are not run here, but they must keep compiling.
	$(CARGO) check --benches --quiet
	tests/clients/run
	@if [ -f .postgres-skipped ]; then rm -f .postgres-skipped; \
	  echo "!! Reminder: the PostgreSQL half of the tests was SKIPPED (PostgreSQL not reachable)."; fi

# Only the real-client tests (AI SDK, OpenAI SDK, generated TypeScript and Python clients).
test-clients:
	tests/clients/run

# Load test over loopback (release build, fresh SQLite; BENCH_ARGS="--postgres URL" adds PostgreSQL,
# "--scale" seeds 10 million messages first). Prints a table and saves results/bench-*.json.
bench:
	@command -v wrk >/dev/null 2>&1 || { echo "installing wrk (Debian)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq wrk >/dev/null; else sudo apt-get install -y -qq wrk >/dev/null; fi; }
	$(CARGO) build --release --bin confidant --example mock_provider --example stream_load
	python3 bench/bench.py $(BENCH_ARGS)

# The API fuzzer (schemathesis, installed into target/fuzz-venv): any 5xx or undocumented status
# fails. Minutes long, so not part of `make test`; run it after changing the API.
fuzz:
	tests/fuzz/run

# Criterion micro-benchmarks: token verification, wire-format encoders, the scoped list query.
microbench:
	$(CARGO) bench

openapi:
	$(CARGO) run --quiet --bin confidant -- openapi > openapi/openapi.json.tmp
	mv openapi/openapi.json.tmp openapi/openapi.json
	@echo "openapi/openapi.json regenerated"

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

clean-db:
	rm -f confidant.db confidant.db-wal confidant.db-shm confidant.db.master-key
