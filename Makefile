# make run: install what serving needs, then serve · make test: install the dev tools too,
# then lint, type-check and test. Both install exactly what uv.lock pins (hashes included).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DB ?= sqlite:///./opencdp.db
# make run HOST=0.0.0.0 PORT=8080: where the server listens (flags of opencdp serve).
HOST ?= 127.0.0.1
PORT ?= 8000
URL = http://$(if $(filter 0.0.0.0 ::,$(HOST)),127.0.0.1,$(HOST)):$(PORT)
# uv itself comes from PyPI, pinned, into a small venv of its own; it never downloads a Python.
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
SYNC := $(UV) sync --frozen --python $(PY)

define TOUR
opencdp is starting on $(URL) (Ctrl-C to stop; API docs at $(URL)/docs). In another terminal:

  TOKEN=$$($(BIN)/opencdp tokens create --db $(DB) --client acme --all-accounts --all-brands --scope read,write)
  curl -s $(URL)/track/acme/web/shop/v1/identify \
    -H 'content-type: application/json' -H "auth-token: $$TOKEN" \
    -d '{"userId": "ABC/123", "event": "identify", "traits": {"email": "email@example.com", "firstName": "Fred"}, "timestamp": "2019-11-18T13:30:11.444Z"}'

endef
export TOUR

.PHONY: run test lint clean install install-dev lock test-latest
.PHONY: crash
CRASH_CYCLES ?= 50

run: $(UV)
	$(SYNC) --no-dev --inexact
	@echo "$$TOUR"
	$(BIN)/opencdp serve --db $(DB) --host $(HOST) --port $(PORT)

test: lint
	$(BIN)/pytest -n 2

# kill -9 the real server under load, CRASH_CYCLES times per store, and prove nothing
# acknowledged is lost or duplicated; then the negative control (--unsafe) must see loss.
crash: install-dev
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

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

# make bench: the benchmark (BENCHMARKS.md); QUICK=1 for the short regression run.
.PHONY: bench
bench: install-dev
	$(BIN)/python -m bench $(if $(QUICK),--quick) $(BENCH_ARGS)

# /docs serves Swagger UI from the package: the npm package swagger-ui-dist, its files copied
# unchanged into $(SWAGGER_DIR) with its version, integrity hash and licence.
SWAGGER_UI ?= 5.35.0
SWAGGER_DIR := src/opencdp/static/swagger-ui
SWAGGER_FILES := swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css \
	favicon-32x32.png LICENSE NOTICE
.PHONY: vendor-swagger-ui
vendor-swagger-ui:
	rm -rf $(TOOLS)/swagger-ui && mkdir -p $(TOOLS)/swagger-ui
	cd $(TOOLS)/swagger-ui && npm pack --silent swagger-ui-dist@$(SWAGGER_UI) >/dev/null \
		&& tar xzf swagger-ui-dist-$(SWAGGER_UI).tgz
	cp $(addprefix $(TOOLS)/swagger-ui/package/,$(SWAGGER_FILES)) $(SWAGGER_DIR)/
	{ echo "swagger-ui-dist $(SWAGGER_UI) (npm), licence Apache-2.0 (LICENSE, NOTICE;\
	 bundled libraries: swagger-ui-bundle.js.LICENSE.txt)"; \
	  echo "integrity $$(npm view swagger-ui-dist@$(SWAGGER_UI) dist.integrity)"; \
	  echo "files copied unchanged from the package;\
	 refresh with: make vendor-swagger-ui SWAGGER_UI=<version>"; } > $(SWAGGER_DIR)/VERSION
# make mutate: mutmut breaks the code that guards tenant isolation (the read SQL, the
# listings, the look-ups), durability (the commit path), identity and token scopes, one
# change at a time, and runs the focused tests that reach each change ([tool.mutmut] in
# pyproject.toml); the survivors are listed at the end. Not part of make test. It stops
# after MUTATE_SECONDS; run it again to go on where it stopped.
MUTATE_SECONDS ?= 1800
MUTANTS := 'opencdp.store.event_walks.x_walks__*' $(foreach f,created_sql activity_sql resolve \
	events_by_ids workspace_id _profile_pks,'opencdp.store.read_plan.x_$(f)__*') 'opencdp.identity.*' \
	$(foreach f,by_workspace split_answers,'opencdp.store.batching.x_$(f)__*') \
	$(foreach f,_settle describe,'opencdp.store.group_commit.x_$(f)__*') \
	$(foreach f,_take_group _committed _answer,'opencdp.store.group_commit.*$(f)__mutmut_*') \
	'opencdp.store.postgres.apply.*GroupWriter*_commit__mutmut_*' \
	$(foreach f,check_access _covers beyond_reach split_token secret_matches,'opencdp.auth.x_$(f)__*') \
	$(foreach f,principal authorize _entry,'opencdp.auth.*TokenVerifier*$(f)__*')
.PHONY: mutate
mutate: install-dev
	timeout $(MUTATE_SECONDS) $(BIN)/mutmut run --max-children 2 $(MUTANTS) || [ $$? -eq 124 ]
	$(BIN)/mutmut results | grep -v ': not checked$$' || true

clean:
	rm -rf build dist mutants $(TOOLS) $(LATEST) src/*.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

install-dev: $(UV)
	$(SYNC)

$(UV):
	$(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Move the pins deliberately: every package to its newest release allowed by pyproject.toml.
lock: $(UV)
	$(UV) lock --upgrade --python $(PY)

# The suite against the newest releases, in a venv of its own, without touching uv.lock:
# drift shows here before the lock moves.
LATEST := .venv-latest
test-latest: $(UV) $(BROWSER_DEPS)
	rm -rf $(LATEST)
	$(UV) venv --python $(PY) $(LATEST)
	$(UV) pip install --python $(LATEST) --upgrade --refresh -e . --group dev
	$(LATEST)/bin/ruff check .
	$(LATEST)/bin/mypy --cache-dir $(LATEST)/.mypy_cache
	$(LATEST)/bin/pytest -n 2
