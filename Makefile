# make run: start the server on http://127.0.0.1:8000 · make test: lint, type-check, test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DB ?= sqlite:///./opencdp.db

define TOUR
opencdp is starting on http://127.0.0.1:8000 (Ctrl-C to stop). In another terminal:

  TOKEN=$$($(BIN)/opencdp tokens create --db $(DB) --client acme --all-accounts --all-brands --scope read,write)
  curl -s http://127.0.0.1:8000/track/acme/web/shop/v1/identify \
    -H 'content-type: application/json' -H "auth-token: $$TOKEN" \
    -d '{"userId": "ABC/123", "event": "identify", "traits": {"email": "email@example.com", "firstName": "Fred"}, "timestamp": "2019-11-18T13:30:11.444Z"}'

endef
export TOUR

.PHONY: run test lint clean
.PHONY: crash
CRASH_CYCLES ?= 50

run: $(STAMP)
	@echo "$$TOUR"
	$(BIN)/opencdp serve --db $(DB)

test: lint
	$(BIN)/pytest -n 2

# kill -9 the real server under load, CRASH_CYCLES times per store, and prove nothing
# acknowledged is lost or duplicated; then the negative control (--unsafe) must see loss.
crash: $(STAMP)
	$(BIN)/python -m tests.crash_harness --cycles $(CRASH_CYCLES) --store sqlite
	$(BIN)/python -m tests.crash_harness --cycles $(CRASH_CYCLES) --store postgres
	$(BIN)/python -m tests.crash_harness --cycles 10 --store sqlite --unsafe
	$(BIN)/python -m tests.crash_harness --cycles 10 --store postgres --unsafe

# The browser test's npm packages (tests/browser: analytics.js, esbuild, playwright-core; no
# browser download). Without npm the browser test skips locally and fails under CI=true.
BROWSER_DEPS := tests/browser/node_modules/.package-lock.json
test: $(BROWSER_DEPS)
$(BROWSER_DEPS): tests/browser/package-lock.json
	@if command -v npm >/dev/null; then cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund; else echo "npm not found: the browser test will skip"; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# make bench: the benchmark (BENCHMARKS.md); QUICK=1 for the short regression run.
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python -m bench $(if $(QUICK),--quick) $(BENCH_ARGS)

clean:
	rm -rf build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)
