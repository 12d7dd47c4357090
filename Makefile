# Quick start: `make run` trains on the bundled data and leaves a live endpoint; `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: install run test lint bench-quick clean-state

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/informerflow run $(ARGS)

# pytest exits 5 when it collected nothing; that must fail, not pass silently. The temporary
# directory lives in the checkout: pytest prunes old ones under /tmp, and a second pytest on
# the same machine would otherwise delete this run's files while its tests still use them.
test: install
	$(PY) -m pytest --basetemp=$(CURDIR)/.pytest-tmp $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: install
	$(VENV)/bin/ruff check src tests bench

clean-state:
	rm -rf .informerflow
