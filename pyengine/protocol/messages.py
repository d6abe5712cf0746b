"""Shim <-> engine messages (protocol v1): tagged, array-like msgspec Structs.

Every message is a msgpack array whose first item is the integer tag. Fields are only ever
appended, with defaults, so an older shim keeps working against a newer engine. Units are in
the names; `docs/protocol.md` documents every field.

Strings that come from the client (method, URI, host, header values, body) travel as msgpack
`bin` and decode as `bytes`: client bytes need not be UTF-8, and one bad header must not make
the whole frame undecodable.
"""

from typing import Union

import msgspec

PROTOCOL_VERSION = 1

# Decide.surface values.
SURFACE_DESCRIBED = 0  # decision service: the request is described by X-Original-* headers
SURFACE_INLINE = 1  # reverse proxy / drop-in include: the request is the one nginx is serving


class _Msg(msgspec.Struct, array_like=True, gc=False, omit_defaults=False):
    pass


# ---- shim -> engine -------------------------------------------------------------------


class Hello(_Msg, tag=1):
    protocol_version: int
    # Requests this shim (all workers) answered by fail mode since its last report.
    engine_unavailable_delta: int = 0
    # Settle frames the shim could not deliver (no engine) since its last report.
    settle_lost_delta: int = 0


class Decide(_Msg, tag=2):
    generation: int  # HelloReply.generation the descriptor was built for
    surface: int  # SURFACE_DESCRIBED or SURFACE_INLINE
    method: bytes
    uri: bytes  # raw path and query, as the client sent them
    host: bytes
    remote_addr: bytes  # the TCP peer of nginx
    # Values aligned with HelloReply.headers; None = absent; a list = the header's repeated lines
    # in the client's order (joined or refused by pyengine.decision.header_lines, never one picked).
    # A tuple: a Decide the engine keeps (the replay ring, pyengine.recent) holds nothing the
    # cycle collector has to visit again.
    headers: tuple[Union[bytes, list[bytes], None], ...]
    body: Union[bytes, None] = None  # only when HelloReply.needs_body
    request_id: bytes = b""  # nginx $request_id, for the decision log
    # The request body's real length (bytes), which may exceed len(body) (cut at max_body_bytes);
    # -1 = not told (an older shim): len(body) is taken.
    body_bytes: int = -1


class Settle(_Msg, tag=3):
    reservation_id: str
    status: int  # upstream HTTP status seen by the client (0 = no response)
    counted_tokens: int  # output tokens the shim counted in the stream it passed on
    cut: bool  # the shim ended the stream at the allowance
    tail: bytes = b""  # head and tail of the response body (the whole body when it fits settle_bytes)
    client_aborted: bool = False  # the response did not reach its end (client left, or upstream broke off)
    counted_chars: int = 0  # output text characters the shim counted (count_regex captures)
    # Bytes nginx sent to the upstream ($upstream_bytes_sent, summed over tries): > 0 means the
    # upstream received the request and may have run it. -1 = not told (an older shim).
    upstream_bytes_sent: int = -1


class Health(_Msg, tag=4):
    pass


class Metrics(_Msg, tag=5):
    engine_unavailable_delta: int = 0
    settle_lost_delta: int = 0


class Usage(_Msg, tag=6):
    body: bytes  # the JSON body of POST /v1/usage


class DebugSession(_Msg, tag=8):
    kind: int  # 0 = POST /v1/debug/session, 1 = /v1/debug/logout (pyengine.debug_session)
    method: bytes  # the client's HTTP method
    secret: Union[bytes, None] = None  # X-Fairvisor-Debug-Secret as sent; None = absent


class Admin(_Msg, tag=9):
    """One request to the admin listener (contract §8); the engine checks the token and routes."""
    uri: bytes  # raw path and query, as the operator sent them
    method: bytes
    authorization: Union[bytes, None] = None  # the Authorization header as sent (repeats joined); None = absent
    body: Union[bytes, None] = None  # POST/PUT/PATCH/DELETE bodies, at most 1 MiB; None = not read
    engine_unavailable_delta: int = 0  # as in Metrics: carried on every admin request
    settle_lost_delta: int = 0


Request = Union[Hello, Decide, Settle, Health, Metrics, Usage, DebugSession, Admin]

# ---- engine -> shim -------------------------------------------------------------------


class ErrorReply(_Msg, tag=0):
    code: str  # stable short code, e.g. "bad_frame", "version_mismatch"
    message: str


class HelloReply(_Msg, tag=1):
    protocol_version: int
    generation: int  # bumps on every policy (re)load; stale Decide frames get a new HelloReply
    headers: list[str]  # lower-case request header names the engine wants, in this order
    needs_body: bool  # send Decide.body
    max_body_bytes: int  # send at most this many body bytes (bytes)


class Verdict(_Msg, tag=2):
    status: int  # 0 = allow; otherwise the HTTP status to answer the client with
    headers: list[str]  # flat [name, value, name, value, ...] for the client response
    body: str = ""  # response body when status != 0
    delay_ms: int = 0  # throttle: wait this long (milliseconds) before going on
    reservation_id: str = ""  # set when the request reserved LLM tokens or money; "" = none
    # ---- response-side recipe (reverse proxy, LLM formats); see docs/protocol.md ----
    allowance_tokens: int = 0  # output tokens the stream may carry; 0 = do not count or cut
    count_regex: str = ""  # PCRE; group 1 of every match in an SSE event is output text
    chars_per_token_milli: int = 4000  # characters per output token x 1000
    cutoff: str = ""  # complete SSE events to send in place of the rest when the allowance is reached
    drop_regex: str = ""  # PCRE; SSE events matching it are not passed to the client (still settled)
    settle_bytes: int = 0  # keep this many head+tail response bytes for Settle; 0 = no Settle
    new_body: Union[bytes, None] = None  # replacement request body for the upstream; None = unchanged
    # PCRE; group 1 of its first match in the stream's events fills CUTOFF_CAPTURE in `cutoff`
    # (e.g. the response id the provider gave the stream); "" = nothing to capture.
    capture_regex: str = ""


# Placeholders the shim fills in Verdict.cutoff when it sends it. NUL never occurs in the JSON
# the engine writes (msgspec escapes it as \u0000), so neither can come from client bytes.
CUTOFF_TOKENS = "\0T\0"  # the output tokens counted (decimal): what the stream carried
CUTOFF_CAPTURE = "\0C\0"  # group 1 of capture_regex (still JSON-escaped), "" when it never matched


class Reply(_Msg, tag=7):
    status: int  # HTTP status for the admin endpoint (health, metrics, usage, admin)
    content_type: str
    body: str
    headers: list[str] = []  # flat [name, value, ...] added to the response (e.g. WWW-Authenticate)


Response = Union[ErrorReply, HelloReply, Verdict, Reply]
