"""RequestView: the request a Decide frame describes, with lazily parsed parts (query, JWT, client IP)."""

from urllib.parse import parse_qsl, unquote

import msgspec

from .header_lines import header_text, resolve
from ..protocol.messages import SURFACE_DESCRIBED

# Asked of every request: a self-test request carries its run's secret in it (pyengine.selftest).
SELFTEST_HEADER = "x-fairvisor-selftest"

# The header family that describes the request on the decision-service surface: method, URI
# (path and query) and host. Exactly one is trusted per deployment (FAIRVISOR_REQUEST_HEADERS,
# pyengine.config): the other family's headers are not even asked of the shim, so a client
# that sets them (forwardAuth copies client headers) describes nothing.
REQUEST_HEADER_FAMILIES = {
    "original": ("x-original-method", "x-original-uri", "x-original-host"),  # nginx auth_request
    "forwarded": ("x-forwarded-method", "x-forwarded-uri", "x-forwarded-host"),  # Traefik forwardAuth
}
ORIGINAL = REQUEST_HEADER_FAMILIES["original"]


def prefix_matches(prefix: str, path: str) -> bool:
    """Segment-wise prefix: `/v1/` and `/v1` match `/v1` and `/v1/x`, never `/v1x`; `/` matches all."""
    base = prefix.rstrip("/")
    return not base or path == base or path.startswith(base + "/")


def described_headers(family: str) -> tuple[str, ...]:
    """Header names the engine needs on the decision-service surface, besides the policy's own."""
    return REQUEST_HEADER_FAMILIES[family] + ("x-forwarded-for", "x-token-estimate")


def normalize_path(path: str) -> str:
    """Percent-decode and resolve dot segments, so `/v1/%63hat` and `/v1/./chat` select like `/v1/chat`."""
    if not path:
        return "/"
    if "%" in path:
        path = unquote(path)
    if path[0] != "/":
        # Not origin-form (`v1/chat`, `*`, a decoded `%2F`-less target): root it, so a prefix
        # selector such as `/v1/` cannot be sidestepped by dropping the leading slash.
        path = "/" + path
    if "//" not in path and "/." not in path:
        return path or "/"
    out: list[str] = []
    for seg in path.split("/"):
        if seg == "..":
            if out:
                out.pop()
        elif seg and seg != ".":
            out.append(seg)
    trailing = "/" if path.endswith(("/", "/.", "/..")) and out else ""
    return "/" + "/".join(out) + trailing


def strip_port(host: str) -> str:
    """Lower-case host without its port. Client bytes were decoded with replacement, so
    non-UTF-8 input still yields a (never matching) string rather than an error."""
    host = host.strip().lower()
    if host.startswith("["):  # [v6]:port
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


class RequestView(msgspec.Struct, gc=False):
    """What the policy sees of one request. Header values are decoded on first use only.

    `keys` caches limit-key values for this request: several rules keyed on the same
    `jwt:org_id` decode the token once.
    """

    # A msgspec Struct: one is built per request, and its C __init__ costs a fraction of a Python
    # one. gc=False is safe: nothing it holds refers back to it.
    method: str
    path: str  # normalized (see normalize_path)
    query: str
    host: str  # lower-case, without port
    remote_addr: str
    _headers: list  # values in the order of `_index`, padded with None to its length
    _index: dict
    body: bytes | None
    request_id: str = ""
    _params: dict | None = None  # query parameters, parsed on first use
    client_ip: str | None = None  # filled by the ip extractor on first use
    llm: object = None  # LLMRequest, parsed on first use by an LLM rule
    claims: object = False  # the bearer token's claims dict or None, read on first use; False: not yet
    keys: dict = {}  # limit key -> value, filled on first use (msgspec copies the default per instance)
    prompt_ratio: object = None  # model -> learned prompt chars per token (set by the engine)
    body_bytes: int = -1  # the request body's real length (Decide.body_bytes); -1 = not told
    # The headers asked for that came in several lines and are not list headers
    # (pyengine.decision.header_lines): the pipeline refuses the request (ambiguous_header).
    ambiguous: tuple[str, ...] | None = None

    def header(self, name: str) -> str | None:
        """A request header by lower-case name; None when absent or not requested in hello."""
        i = self._index.get(name)
        if i is None:
            return None
        raw = self._headers[i]  # padded to the index's length by view_from_decide
        return None if raw is None else header_text(raw)

    def query_param(self, name: str) -> str | None:
        params = self._params
        if params is None:
            params = {}
            for k, v in parse_qsl(self.query, keep_blank_values=True):
                params.setdefault(k, v)  # the first occurrence wins
            self._params = params
        return params.get(name)


def _described(headers: list, index: dict[str, int], name: str) -> bytes | None:
    i = index.get(name)
    return None if i is None else headers[i]


DECISION_PREFIX = b"/v1/decision"


def _prefixed_uri(own_uri: bytes) -> bytes:
    """Envoy's ext_authz (HTTP) asks `/v1/decision` + the original path and query: with no
    X-Original-URI, the rest after the prefix is the URI described; a bare `/v1/decision` is `/`."""
    if own_uri.startswith(DECISION_PREFIX + b"/"):
        return own_uri[len(DECISION_PREFIX):]
    return b"/"


PROVIDER_PREFIXES = ("/openai", "/anthropic", "/gemini")


def strip_provider_prefix(path: str) -> str:
    """`/openai/v1/chat` -> `/v1/chat`: the reverse proxy removes this segment before forwarding,
    so policies select on the path the upstream sees (contract §3)."""
    for prefix in PROVIDER_PREFIXES:
        if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] in "/?"):
            return path[len(prefix):] or "/"
    return path


def describe_target(method: bytes, uri: bytes, host: bytes, strip_prefix: bool) -> tuple[str, str, str, str]:
    """Raw request-line parts -> (METHOD, normalized path, query, host without port)."""
    path, _, query = uri.decode("utf-8", "replace").partition("?")
    if strip_prefix:
        path = strip_provider_prefix(path)
    host_text = host.decode("utf-8", "replace")
    return (method.decode("utf-8", "replace").upper() or "GET", normalize_path(path), query,
            strip_port(host_text) if host_text else "")


# describe_target results are memoised by raw (method, uri, host, strip): clients repeat a
# handful of endpoints, so this saves the decoding and normalising (~4 us) on nearly every
# request. Longer targets than this are never kept (the table is sized in pyengine.decision.memo).
_CACHED_TARGET_MAX_BYTES = 1024


def view_from_decide(msg, index: dict[str, int], provider_prefixes: bool = False, joins: dict | None = None,
                     family: tuple[str, str, str] = ORIGINAL, targets=None) -> RequestView:
    """Build the view; on the decision-service surface the trusted family's headers describe it.

    `provider_prefixes`: reverse-proxy mode, where inline requests lose a leading
    `/openai`, `/anthropic` or `/gemini` segment on their way upstream. `joins`: the list
    headers' separators by position (CompiledBundle.header_joins); `family`: the method, URI
    and host header names of FAIRVISOR_REQUEST_HEADERS (CompiledBundle.family); `targets`:
    the engine's "target" memo table (pyengine.decision.memo), or None."""
    method, uri, host = msg.method, msg.uri, msg.host
    headers, ambiguous = resolve(msg.headers, joins or {})
    if len(headers) < len(index):  # a short list from an odd shim: the rest are absent
        headers = (*headers, *(None,) * (len(index) - len(headers)))
    described = msg.surface == SURFACE_DESCRIBED
    if described:
        method = _described(headers, index, family[0]) or method
        uri = _described(headers, index, family[1]) or _prefixed_uri(uri)
        host = _described(headers, index, family[2]) or host
    cache_key = (method, uri, host, provider_prefixes and not described)
    target = None if targets is None else targets.get(cache_key)
    if target is None:
        target = describe_target(*cache_key)
        if targets is not None and len(uri) + len(host) <= _CACHED_TARGET_MAX_BYTES:
            targets.remember(cache_key, target)
    method, path, query, host = target
    view = RequestView(method, path, query, host, msg.remote_addr.decode("utf-8", "replace"), headers, index,
                       msg.body, msg.request_id.decode("utf-8", "replace") if msg.request_id else "",
                       body_bytes=msg.body_bytes)
    if ambiguous is not None:
        names = {i: name for name, i in index.items()}
        # A position past the engine's list (an odd shim) names no header: still refused.
        view.ambiguous = tuple(names.get(i, "?") for i in ambiguous)
    return view

