"""Golden protocol messages shared by the Python and Lua sides; `python -m tests.protocol.golden_cases` rewrites golden_frames.json."""

import json
import pathlib

from pyengine.protocol.framing import encode_frame
from pyengine.protocol.messages import (
    Admin,
    Decide,
    ErrorReply,
    Health,
    Hello,
    HelloReply,
    Metrics,
    Reply,
    Settle,
    Usage,
    Verdict,
)

GOLDEN_PATH = pathlib.Path(__file__).with_name("golden_frames.json")

PROBLEM = (
    '{"type":"https://iana.org/assignments/http-problem-types#quota-exceeded",'
    '"title":"Too Many Requests — limité","status":429,"reason":"rate_limit_exceeded",'
    '"violated-policies":["seed"]}'
)

# (name, direction, message). "request" frames are encoded by the shim, "response" frames decoded.
CASES = [
    ("hello", "request", Hello(protocol_version=1, engine_unavailable_delta=0)),
    ("hello_delta_uint8", "request", Hello(protocol_version=1, engine_unavailable_delta=200)),
    ("hello_delta_uint64", "request", Hello(protocol_version=1, engine_unavailable_delta=5_000_000_000)),
    ("hello_settle_lost", "request", Hello(protocol_version=1, engine_unavailable_delta=0, settle_lost_delta=3)),
    (
        "decide_described",
        "request",
        Decide(
            generation=3,
            surface=0,
            method=b"POST",
            uri=b"/v1/decision",
            host=b"localhost",
            remote_addr=b"127.0.0.1",
            headers=(b"GET", b"/api/items?page=2", None, b"10.0.0.1"),
            body=None,
            request_id=b"0123456789abcdef0123456789abcdef",
            body_bytes=-1,  # no body sent: the decision service
        ),
    ),
    (
        "decide_inline_body",
        "request",
        Decide(
            generation=70_000,
            surface=1,
            method=b"POST",
            uri=b"/openai/v1/chat/completions?x=%2F",
            host=b"edge.example",
            remote_addr=b"::1",
            # A non-UTF-8 header value and one long enough for bin16.
            headers=(b"\xff\xfe raw", None, b"Bearer " + b"a" * 300),
            body=b'{"model":"gpt-4o-mini","messages":[]}',
            request_id=b"",
            body_bytes=3_000_000,  # the body was cut at max_body_bytes: the engine reserves from this
        ),
    ),
    (
        "decide_repeated_headers",
        "request",
        # A header in several lines goes as an array of its values, in the client's order.
        Decide(generation=4, surface=1, method=b"GET", uri=b"/api", host=b"h", remote_addr=b"127.0.0.1",
               headers=([b"10.0.0.1", b"203.0.113.7"], b"decoy", None, [b"a", b"b", b"c"]), body=None,
               request_id=b"", body_bytes=-1),
    ),
    ("decide_no_headers", "request", Decide(generation=1, surface=1, method=b"GET", uri=b"/", host=b"h",
                                            remote_addr=b"127.0.0.1", headers=(), body=b"", request_id=b"r", body_bytes=0)),
    ("health", "request", Health()),
    ("metrics", "request", Metrics(engine_unavailable_delta=7, settle_lost_delta=2)),
    ("admin", "request", Admin(uri=b"/metrics?x=1", method=b"GET", authorization=b"Bearer s3cret", body=None,
                               engine_unavailable_delta=4, settle_lost_delta=1)),
    ("admin_no_auth", "request", Admin(uri=b"/readyz", method=b"POST", authorization=None, body=b"{}")),
    ("usage", "request", Usage(body=b'{"key":"org-a","prompt_tokens":10,"completion_tokens":5,"model":"m"}')),
    ("error_reply", "response", ErrorReply(code="version_mismatch", message="engine speaks protocol 1")),
    (
        "hello_reply",
        "response",
        HelloReply(
            protocol_version=1,
            generation=70_000,
            headers=["x-original-method", "x-original-uri", "x-forwarded-for", "authorization"],
            needs_body=True,
            max_body_bytes=1_048_576,
        ),
    ),
    ("hello_reply_empty", "response", HelloReply(protocol_version=1, generation=1, headers=[], needs_body=False,
                                                 max_body_bytes=0)),
    (
        "verdict_allow",
        "response",
        Verdict(status=0, headers=["RateLimit-Policy", '"per-ip";q=10;w=2', "RateLimit", '"per-ip";r=9;t=0'],
                body="", delay_ms=0, reservation_id="65f0912d-1"),
    ),
    (
        "verdict_reject",
        "response",
        Verdict(
            status=429,
            headers=[
                "X-Fairvisor-Reason", "rate_limit_exceeded",
                "Retry-After", "1",
                "RateLimit-Policy", '"per-ip";q=10;w=2',
                "RateLimit", '"per-ip";r=0;t=1',
                "Content-Type", "application/problem+json",
            ],
            body=PROBLEM,
            delay_ms=0,
        ),
    ),
    ("verdict_throttle", "response", Verdict(status=0, headers=["X-Fairvisor-Warning", "budget_throttle"], body="",
                                             delay_ms=30_000)),
    (
        # Reverse proxy, OpenAI stream: the recipe of fields 6-12 (docs/protocol.md).
        "verdict_stream_recipe",
        "response",
        Verdict(
            status=0,
            headers=["RateLimit-Policy", '"tpm";q=60000;w=60', "RateLimit", '"tpm";r=58000;t=2'],
            body="",
            delay_ms=0,
            reservation_id="r-9f8e7d6c-42",
            allowance_tokens=70_000,
            count_regex=r'"content":"((?:[^"\\]|\\.)*)"',
            chars_per_token_milli=3_750,
            cutoff='data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n\ndata: [DONE]\n\n',
            drop_regex=r'^data: \{.*"choices":\[\]',
            settle_bytes=65_536,
            new_body=b'{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true}}',
        ),
    ),
    ("verdict_recipe_defaults", "response", Verdict(status=0, headers=[], reservation_id="r-1", settle_bytes=16_384)),
    (
        "settle_cut",
        "request",
        Settle(reservation_id="r-9f8e7d6c-42", status=200, counted_tokens=70_000, cut=True,
               tail=b'data: {"id":"x"}\n\n' + bytes(range(256)), client_aborted=False, counted_chars=262_500,
               upstream_bytes_sent=1_234),
    ),
    ("settle_no_response", "request", Settle(reservation_id="r-" + "7" * 40, status=0, counted_tokens=0, cut=False,
                                             tail=b"", client_aborted=True, counted_chars=0, upstream_bytes_sent=0)),
    ("reply_health", "response", Reply(status=200, content_type="application/json",
                                       body='{"status":"ok","policy_version":3,"policy_hash":"ab12"}')),
    ("reply_unauthorized", "response", Reply(status=401, content_type="application/problem+json",
                                             body='{"status":401}', headers=["WWW-Authenticate", "Bearer"])),
    (
        "reply_metrics",
        "response",
        Reply(status=200, content_type="text/plain; version=0.0.4",
              body="".join(f'fairvisor_decisions_total{{action="allow",reason="",policy="p{i}"}} {i}\n'
                           for i in range(12))),
    ),
]


def fields(msg) -> list:
    """The message as its wire array, JSON-able: bytes become {"bin_hex": ...}."""
    def conv(v):
        if isinstance(v, bytes):
            return {"bin_hex": v.hex()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    return [type(msg).__struct_config__.tag] + [conv(getattr(msg, f)) for f in msg.__struct_fields__]


def golden() -> dict:
    return {
        "comment": "Frames (4-byte big-endian length + msgpack) from pyengine's encoder; see docs/protocol.md. "
                   "Regenerate only on a deliberate protocol change: python -m tests.protocol.golden_cases",
        "frames": [
            {"name": name, "direction": direction, "message": type(msg).__name__, "fields": fields(msg),
             "hex": encode_frame(msg).hex()}
            for name, direction, msg in CASES
        ],
    }


if __name__ == "__main__":
    doc = golden()
    # One frame per line: reviewable diffs without a 1000-line file.
    lines = ",\n  ".join(json.dumps(f, ensure_ascii=False) for f in doc["frames"])
    GOLDEN_PATH.write_text(f'{{"comment": {json.dumps(doc["comment"])},\n "frames": [\n  {lines}\n ]}}\n')
    print(f"wrote {GOLDEN_PATH}")
