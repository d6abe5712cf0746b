"""LoopDetector: an exact sliding window, stepped with a frozen clock."""

import pytest

from pyengine.clock import FakeClock
from pyengine.guards.loop import LoopDetector
from pyengine.state.memory import MemoryStore

T0 = FakeClock().now_s()


@pytest.mark.parametrize("steps", [
    # (seconds after T0, expected loop?) for window 10 s, threshold 3
    [(0, False), (1, False), (2, True)],                      # three within 10 s
    [(0, False), (5, False), (10, False), (10.5, True)],       # t=0 left the window exactly at 10
    [(0, False), (9.999, False), (9.9995, True)],              # still inside by half a millisecond
    [(0, False), (6, False), (12, False), (18, False), (24, False)],  # spaced by 6 s: never 3 in 10 s
    [(0, False), (1, False), (2, True), (3, True), (12.5, False), (13, False), (13.5, True)],  # flagged ones count
])
def test_sliding_window_steps(steps):
    store = MemoryStore()
    loop = LoopDetector(store, window_s=10, threshold=3)
    got = [(t, loop.hit("k", T0 + t)) for t, _ in steps]
    assert got == steps


def test_a_fixed_window_would_miss_what_the_sliding_one_catches():
    # Two requests at the end of one 10-s grid bucket and one at the start of the next: a fixed
    # window counts 2 then 1; the sliding window sees 3 within 2 s.
    store = MemoryStore()
    loop = LoopDetector(store, window_s=10, threshold=3)
    base = (T0 // 10) * 10
    assert loop.hit("k", base + 9.0) is False
    assert loop.hit("k", base + 9.5) is False
    assert loop.hit("k", base + 10.5) is True


def test_state_is_bounded_and_expires_with_the_window():
    store = MemoryStore()
    loop = LoopDetector(store, window_s=10, threshold=4)
    for i in range(50):
        loop.hit("k", T0 + i * 0.1)
    value = store.get("k")
    assert len(value) == 1 + 3  # expiry + threshold - 1 timestamps, however many attempts
    assert value[0] == pytest.approx(T0 + 4.9 + 10)
    assert loop.count("k", T0 + 5) == 3
    assert loop.count("k", T0 + 14.9) == 0  # the newest left the window: expired == absent
    assert store.sweep(T0 + 14.9, 10) == 1


def test_keys_are_independent_and_retry_and_delay_follow_the_window():
    store = MemoryStore()
    loop = LoopDetector(store, window_s=2.5, threshold=5)
    for _ in range(4):
        assert loop.hit("a", T0) is False
    assert loop.hit("b", T0) is False
    assert loop.hit("a", T0) is True
    assert loop.retry_after_s == 3  # ceil(2.5)
    assert loop.delay_ms == 625  # 2.5 s / (5 - 1) gaps
    assert LoopDetector(store, window_s=600, threshold=2).delay_ms == 30_000  # capped


def test_invalid_configuration_is_refused():
    with pytest.raises(ValueError):
        LoopDetector(MemoryStore(), window_s=0, threshold=3)
    with pytest.raises(ValueError):
        LoopDetector(MemoryStore(), window_s=1, threshold=1)


def test_fingerprint_body_parts():
    from pyengine.guards.fingerprint import body_part, fingerprint

    gemini = b'{"contents":[{"role":"user","parts":[{"text":"hi"}]},{"role":"model","parts":[]}]}'
    assert body_part(gemini) == b'chat\x00[{"text":"hi"}]\x00'
    assert body_part(b"not json") == b"not json"
    assert body_part(b'{"prompt":"x"}') == b'{"prompt":"x"}'  # no chat: the whole body
    assert body_part(None) == b""
    a = fingerprint("POST", "/v1/chat", ["org1"], b"x")
    assert a == fingerprint("POST", "/v1/chat", ["org1"], b"x")
    assert len({a, fingerprint("POST", "/v1/chat", [None], b"x"), fingerprint("POST", "/v1/chat", [""], b"x"),
                fingerprint("GET", "/v1/chat", ["org1"], b"x"), fingerprint("POST", "/v1/chat", ["org1"], b"y")}) == 5
