# Fairvisor: `make run` starts the edge on the bundled default policy; `make test` runs every test.
.PHONY: bootstrap bootstrap-run run demo test test-fast test-latest test-docker lock wheel deb bench soak clean fuzz

VENV := .venv
PY := $(VENV)/bin/python

# Installs from requirements-test.lock; bootstrap-run from requirements.lock (no test packages).
bootstrap:
	scripts/bootstrap

bootstrap-run:
	scripts/bootstrap --no-test

run: bootstrap-run
	$(VENV)/bin/fairvisor run

demo: bootstrap
	scripts/demo

test: bootstrap
	$(PY) -m pytest -q

# -m replaces addopts' marker expression, so it repeats "not docker".
test-fast: bootstrap
	$(PY) -m pytest -q -m "not integration and not docker"

# The unit tests on the newest versions pyproject.toml allows, in a separate venv, unlocked: a
# release that breaks us shows here before `make lock` picks it up (docs/install.md).
test-latest:
	rm -rf .venv-latest
	python3 -m venv .venv-latest
	.venv-latest/bin/pip install -q --upgrade --upgrade-strategy eager -e ".[test]"
	.venv-latest/bin/python -m pytest -q -p no:cacheprovider -m "not integration and not docker"

# Refreshes requirements.lock and requirements-test.lock from PyPI (scripts/lock; docs/install.md).
lock:
	scripts/lock

# dist/fairvisor-<version>-py3-none-any.whl, built with the locked setuptools (docs/install.md).
wheel: bootstrap-run
	rm -rf build
	$(VENV)/bin/pip wheel -q --no-deps --no-build-isolation -w dist .

# dist/fairvisor_<version>_<arch>.deb with dpkg-deb: the wheel in a venv under /usr/lib/fairvisor
# from requirements.lock, fairvisor.service, /etc/fairvisor/policy.json (packaging/deb; docs/install.md).
deb: wheel
	packaging/deb/build.sh

# Builds the real image (docker/build-local.sh) and installs the .deb in a clean Debian 12 container,
# driving both over HTTP, and runs examples/fleet (two edges and Redis) with docker-compose, which
# bootstrap installs; needs a docker daemon or dockerd.
test-docker: bootstrap deb
	docker/install-tools.sh
	$(PY) -m pytest -q -m docker tests/docker

# Loopback only, bounded: about 4 minutes. Figures and how to read them: docs/performance.md;
# the last step rewrites only its generated block (between the bench:begin/end markers).
bench: bootstrap
	$(VENV)/bin/pip install -q -e ".[test,bench]"
	mkdir -p .benchmarks
	rm -f .benchmarks/run_bench.md .benchmarks/proxy_bench.md .benchmarks/llm_stream.md \
		.benchmarks/proxy_bench.json .benchmarks/engine.json .benchmarks/engine_memory.json \
		.benchmarks/fleet_bench.md \
		.benchmarks/engines_bench.md
	$(PY) bench/run_bench.py --out .benchmarks/run_bench.md
	$(PY) bench/chart.py .benchmarks/run_bench.md docs/bench-latency.png
	$(PY) bench/proxy_bench.py --out .benchmarks/proxy_bench.md --json .benchmarks/proxy_bench.json
	$(PY) bench/llm_stream_bench.py --out .benchmarks/llm_stream.md
	$(PY) bench/fleet_bench.py --out .benchmarks/fleet_bench.md
	$(PY) bench/engines_bench.py --out .benchmarks/engines_bench.md
	$(PY) -m pytest -q -p no:cacheprovider --benchmark-enable --benchmark-columns=min,median,mean,rounds \
		--benchmark-json=.benchmarks/engine.json \
		tests/engine/test_bench_engine.py tests/algorithms/test_bench_algorithms.py
	$(PY) bench/engine_memory.py 1000000 > .benchmarks/engine_memory.json
	cat .benchmarks/engine_memory.json
	$(PY) bench/report.py --doc docs/performance.md --run-bench .benchmarks/run_bench.md \
		--proxy .benchmarks/proxy_bench.md --llm .benchmarks/llm_stream.md --fleet .benchmarks/fleet_bench.md \
		--engines .benchmarks/engines_bench.md \
		--engine-json .benchmarks/engine.json --memory .benchmarks/engine_memory.json

# Mixed loopback traffic through two real edges, reloads every 30 s, engine RSS/fds sampled;
# fails on any error or growth after warm-up. SOAK_S=120 for a shorter run. docs/reliability.md.
SOAK_S ?= 600
soak: bootstrap
	mkdir -p .benchmarks
	$(PY) bench/soak.py --duration $(SOAK_S) --out .benchmarks/soak.json

# The properties of tests/fuzz at FAIRVISOR_FUZZ_EXAMPLES inputs each (default 10000; make test
# runs 100-500). About 25 minutes; counts and times: docs/reliability.md.
fuzz: bootstrap
	FAIRVISOR_FUZZ_EXAMPLES=$${FAIRVISOR_FUZZ_EXAMPLES:-10000} $(PY) -m pytest -q -p no:cacheprovider \
		--hypothesis-show-statistics --durations=0 tests/fuzz

clean:
	rm -rf $(VENV) .venv-latest .venv-lock .pytest_cache .benchmarks build dist
