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

run: $(STAMP)
	@echo "$$TOUR"
	$(BIN)/opencdp serve --db $(DB)

test: lint
	$(BIN)/pytest -n 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)
