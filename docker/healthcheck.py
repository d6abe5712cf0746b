"""Docker HEALTHCHECK: exit 0 when GET /readyz on this container's FAIRVISOR_LISTEN port answers 200."""

import os
import sys
import urllib.request

port = os.environ.get("FAIRVISOR_LISTEN", "0.0.0.0:8080").rpartition(":")[2]
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except OSError as exc:  # URLError and HTTPError (503 not ready) included
    print(f"readyz: {exc}", file=sys.stderr)
    sys.exit(1)
