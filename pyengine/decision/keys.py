"""Limit-key extractors: turn `jwt:<claim>`, `header:<name>`, `ip:address`, ... into request values.

An extractor returns the key's value as a string, or None when the request lacks it (the rule
is then skipped). Extractors never raise on client input: garbage JWTs, odd addresses and
non-UTF-8 bytes all become None or a replacement-character string.
"""

import ipaddress

import jwt as pyjwt

from .bots import CATEGORIES, bot_category
from ..llm.request import llm_of
from .memo import Memo

# X-Forwarded-For values longer than this are walked every time, never kept in the memo (so the
# client_ip table stays at a few MB: pyengine.decision.memo sizes it).
_CACHED_XFF_MAX_CHARS = 256

# ip:type values (fairvisor/edge's set, from ipverse/as-metadata categories): what an upstream's
# X-ASN-Type may say. Anything else, and no header at all, is "unknown".
IP_TYPES = ("business", "education_research", "government_admin", "hosting", "isp", "unrouted", "unknown")
_IP_TYPE_SET = frozenset(IP_TYPES)
_TRUE_WORDS = frozenset(("1", "true", "yes"))

# Keys whose values come from a closed set: a `match` or kill switch naming another value could
# never hold, so the loader refuses it (pyengine.policy.checks).
KEY_VALUES: dict[str, tuple[str, ...]] = {
    "ua:bot": ("true", "false"),
    "ip:tor": ("true", "false"),
    "ip:type": IP_TYPES,
    "ua:bot_category": CATEGORIES,
}


def jwt_claims(authorization: str | None, memo=None) -> dict | None:
    """The payload of an `Authorization: Bearer <jwt>` header, NOT verified (keys, not auth).
    `memo`: the engine's "jwt" table (clients repeat their token: it hits almost always)."""
    if not authorization or len(authorization) < 8 or authorization[:7].lower() != "bearer ":
        return None
    token = authorization[7:].strip()
    if memo is not None:
        claims = memo.get(token, False)
        if claims is not False:
            return claims
    try:
        claims = pyjwt.decode(token, options={"verify_signature": False})
        if not isinstance(claims, dict):
            claims = None
    except Exception:  # noqa: BLE001 - any malformed token simply has no claims
        claims = None
    return claims if memo is None else memo.remember(token, claims)


def claim_text(value) -> str | None:
    """Scalar claims key limits; objects and lists do not (too easy to make unbounded keys)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return None


class TrustedProxies:
    """Decides whether an address is a trusted proxy; results memoised per address string in
    the engine's memo (`memo`: pyengine.decision.memo.Memo, the trusted-proxy list is engine-wide)."""

    __slots__ = ("_nets", "_cache", "_walks", "memo")

    def __init__(self, cidrs, memo: Memo | None = None):
        self._nets = [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip()]
        self.memo = Memo() if memo is None else memo  # also the extractors' (make_extractor)
        self._cache = self.memo.trusted  # address -> trusted
        self._walks = self.memo.client_ip  # (peer, X-Forwarded-For) -> client address

    def trusted(self, addr: str) -> bool:
        hit = self._cache.get(addr)
        if hit is not None:
            return hit
        try:
            ip = ipaddress.ip_address(addr)
            result = any(ip in net for net in self._nets if net.version == ip.version)
        except ValueError:
            result = False
        return self._cache.remember(addr, result)

    def client_ip(self, remote_addr: str, forwarded_for: str | None) -> str:
        """Walk from the connection peer leftwards through X-Forwarded-For while hops are trusted.

        Results are cached per (peer, X-Forwarded-For): a client repeats both on every request.
        Long headers are walked every time, so the cache stays small."""
        if forwarded_for is not None and len(forwarded_for) > _CACHED_XFF_MAX_CHARS:
            return self._walk(remote_addr, forwarded_for)
        key = (remote_addr, forwarded_for)
        client = self._walks.get(key)
        if client is None:
            client = self._walks.remember(key, self._walk(remote_addr, forwarded_for))
        return client

    def _walk(self, remote_addr: str, forwarded_for: str | None) -> str:
        client = remote_addr
        if forwarded_for and self.trusted(remote_addr):
            for hop in reversed(forwarded_for.split(",")):
                hop = hop.strip()
                if not hop:
                    continue
                client = hop
                if not self.trusted(hop):
                    break
        return client


def make_extractor(limit_key: str, proxies: TrustedProxies):
    """A function RequestView -> str|None for one limit key (syntax already validated); its
    memo tables are the engine's, reached through `proxies.memo`."""
    kind, _, name = limit_key.partition(":")
    if kind == "jwt":
        jwt_memo = proxies.memo.jwt

        def jwt_claim(view):
            claims = view.claims  # one token read per request, whichever claims the keys ask for
            if claims is False:
                claims = view.claims = jwt_claims(view.header("authorization"), jwt_memo)
            return None if claims is None else claim_text(claims.get(name))
        return jwt_claim
    if kind == "header":
        lname = name.lower()
        return lambda view: view.header(lname)
    if kind == "query":
        return lambda view: view.query_param(name)
    if limit_key == "ip:address":
        def ip_address(view):
            ip = view.client_ip
            if ip is None:
                ip = view.client_ip = proxies.client_ip(view.remote_addr, view.header("x-forwarded-for"))
            return ip or None
        return ip_address
    if limit_key == "ip:country":
        def country(view):
            cc = view.header("x-country-code")
            return cc.strip().upper() if cc else None
        return country
    if limit_key == "ip:asn":
        def asn(view):
            return asn_text(view.header("x-asn"))
        return asn
    if limit_key == "ip:type":
        def ip_type(view):
            t = view.header("x-asn-type")
            t = t.strip().lower() if t else None
            return t if t in _IP_TYPE_SET else "unknown"
        return ip_type
    if limit_key == "ip:tor":
        def tor(view):
            v = view.header("x-tor-exit")
            return "true" if v and v.strip().lower() in _TRUE_WORDS else "false"
        return tor
    if limit_key == "ua:bot":
        bot_memo = proxies.memo.bot

        def ua_bot(view):
            return "false" if bot_category(view.header("user-agent"), bot_memo) is None else "true"
        return ua_bot
    if limit_key == "ua:bot_category":
        bot_memo = proxies.memo.bot
        return lambda view: bot_category(view.header("user-agent"), bot_memo)
    if limit_key == "llm:model":
        def llm_model(view):  # the request's LLM fields are parsed once, shared with the LLM rules
            return llm_of(view).model or None
        return llm_model
    raise ValueError(f"unknown limit key {limit_key!r}")


def asn_text(value: str | None) -> str | None:
    """An X-ASN value as its number: "AS13335", "as13335" and " 13335 " are one ASN ("13335").
    Other text is kept verbatim (stripped): it still keys, it just never equals a number."""
    if not value:
        return None
    v = value.strip()
    if v[:2].lower() == "as" and v[2:].isdigit():
        v = v[2:]
    return v or None


_UPSTREAM_HEADERS = {
    "ip:address": ("x-forwarded-for",),
    "ip:country": ("x-country-code",),
    "ip:asn": ("x-asn",),
    "ip:type": ("x-asn-type",),
    "ip:tor": ("x-tor-exit",),
    "ua:bot": ("user-agent",),
    "ua:bot_category": ("user-agent",),
}


def headers_needed(limit_key: str) -> tuple[str, ...]:
    """The request headers an extractor reads, so the shim sends only those."""
    kind, _, name = limit_key.partition(":")
    if kind == "jwt":
        return ("authorization",)
    if kind == "header":
        return (name.lower(),)
    return _UPSTREAM_HEADERS.get(limit_key, ())
