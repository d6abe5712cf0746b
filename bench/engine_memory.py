"""Memory per tenant key: drive N distinct tenants through the real decision path, report RSS.

Usage: python bench/engine_memory.py [N]   (default 1,000,000). Prints one JSON line.
"""

import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pyengine.clock import FakeClock  # noqa: E402
from pyengine.config import from_env  # noqa: E402
from pyengine.engine import Engine  # noqa: E402
from pyengine.protocol.messages import SURFACE_INLINE, Decide  # noqa: E402

BUNDLE = {
    "bundle_version": 1,
    "policies": [{"id": "tenants", "spec": {"selector": {"pathPrefix": "/"}, "rules": [
        {"name": "per-tenant", "limit_keys": ["header:x-tenant-id"], "algorithm": "token_bucket",
         "algorithm_config": {"tokens_per_second": 10, "burst": 20}}]}}],
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    engine = Engine(from_env({}), clock=FakeClock())
    engine.load_bytes(json.dumps(BUNDLE).encode(), "bench.json")
    hello = engine.hello_reply
    slot = hello.headers.index("x-tenant-id")
    headers = [None] * len(hello.headers)
    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    for i in range(n):
        headers[slot] = b"tenant-%08d" % i
        engine.decide(Decide(generation=hello.generation, surface=SURFACE_INLINE, method=b"GET", uri=b"/v1/x",
                             host=b"api", remote_addr=b"127.0.0.1", headers=headers))
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = rss_bytes()
    print(json.dumps({
        "tenant_keys": len(engine.store),
        "rss_total_mb": round(after / 2**20, 1),
        "rss_growth_mb": round((after - before) / 2**20, 1),
        "bytes_per_key": round((after - before) / max(1, len(engine.store))),
        "decide_us_mean": round(elapsed / n * 1e6, 2),
    }))


if __name__ == "__main__":
    main()
