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

# Loopback only, bounded: about 3 minutes. Figures and how to read them: docs/performance.md.
bench: bootstrap
	$(PY) bench/run_bench.py
	$(PY) bench/llm_stream_bench.py
	$(PY) -m pytest -q -p no:cacheprovider --benchmark-enable --benchmark-columns=min,median,mean,rounds \
		tests/engine/test_bench_engine.py tests/algorithms/test_bench_algorithms.py
	$(PY) bench/engine_memory.py 1000000

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
