# Fairvisor: `make run` starts the edge on the bundled default policy; `make test` runs every test.
.PHONY: bootstrap run demo test test-fast test-docker bench clean

VENV := .venv
PY := $(VENV)/bin/python

bootstrap:
	scripts/bootstrap

run: bootstrap
	$(VENV)/bin/fairvisor run

demo: bootstrap
	scripts/demo

test: bootstrap
	$(PY) -m pytest -q

test-fast: bootstrap
	$(PY) -m pytest -q -m "not integration"

# Builds the real image (docker/build-local.sh) and drives it over HTTP; needs a docker daemon or dockerd.
test-docker: bootstrap
	docker/install-tools.sh
	$(PY) -m pytest -q -m docker tests/docker

bench: bootstrap
	$(PY) bench/run_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
