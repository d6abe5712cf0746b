"""The last requests the engine decided, as their Decide frames, for `fairvisor validate --against`.

They never leave the engine: a candidate bundle is replayed against them in memory
(pyengine.what_if) and only the outcome, with limit keys hashed as the decision log shows
them, is answered. Bounded: MAX_REQUESTS frames, each body kept only up to MAX_BODY_BYTES
(a longer one is left out of the copy and reads as absent in the replay), so at most
MAX_REQUESTS x MAX_BODY_BYTES (64 MiB) of bodies, a few MiB for typical traffic.
"""

from collections import deque

import msgspec

MAX_REQUESTS = 2000  # replayed twice on the engine loop within what_if.BUDGET_S
MAX_BODY_BYTES = 32 << 10


class RecentRequests:
    __slots__ = ("items", "_append")

    def __init__(self, max_requests: int = MAX_REQUESTS):
        self.items: deque = deque(maxlen=max_requests)  # (now_s, Decide, the header names it follows)
        self._append = self.items.append

    def add(self, now_s: float, msg, header_names: tuple) -> None:
        body = msg.body
        if body is not None and len(body) > MAX_BODY_BYTES:
            msg = msgspec.structs.replace(msg, body=None)
        self._append((now_s, msg, header_names))

    def __len__(self) -> int:
        return len(self.items)

    def snapshot(self) -> list:
        return list(self.items)
