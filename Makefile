# Fairvisor: `make run` starts the edge on the bundled default policy; `make test` runs every test.
.PHONY: bootstrap run demo test test-fast bench clean

VENV := .venv
PY := $(VENV)/bin/python

bootstrap:
	scripts/bootstrap

run: bootstrap
	$(VENV)/bin/fairvisor run

test: bootstrap
	$(PY) -m pytest -q

test-fast: bootstrap
	$(PY) -m pytest -q -m "not integration"

bench: bootstrap
	$(PY) bench/run_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
