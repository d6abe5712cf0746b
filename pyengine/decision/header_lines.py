"""Repeated header lines: joined into one list (RFC 9110 §5.3) or refused as ambiguous; header bytes as text.

The shim sends every line of a header the engine asked for: one value as bin, several as an
array of bin in the order the client sent them (docs/protocol.md, Decide.headers). What they
mean is decided here, once per request, before any rule reads a header:

- A header the engine itself reads as a list (`X-Forwarded-For`, `Forwarded`, `Cookie`) is
  joined with the list separator, so `a` + `b` reads exactly as `a, b` (RFC 9110 §5.3; RFC
  6265 §5.4 for Cookie). The client address is then walked from the right end of the whole
  list: a line the client wrote first can never become the key.
- Every other header the engine asked for keys a limit, matches a rule or kill switch, or
  describes the request: a second line would let the client choose which one counts, so the
  request is refused (400, reason `ambiguous_header`; pyengine.decision.pipeline). A list header that a
  policy keys on raw (`header:x-forwarded-for`) is one of these too. A header only shadow
  policies read is not refused (shadow never changes a response): it reads as absent there,
  and the would-be refusal is counted.
"""

# The headers the engine parses as lists, with the separator their lines are joined with.
LIST_SEPARATORS = {"x-forwarded-for": b", ", "forwarded": b", ", "cookie": b"; "}

_REPLACEMENT = "\ufffd"


def join_plan(names: list[str], raw_keyed) -> dict[int, bytes]:
    """Header position -> separator, for the list headers no policy reads as a raw value."""
    return {i: LIST_SEPARATORS[n] for i, n in enumerate(names) if n in LIST_SEPARATORS and n not in raw_keyed}


class HeaderNeeds:
    """The headers a compiled bundle asks the shim for, and who reads each (pyengine.policy.compiler).

    `reader` is set by the compiler before it adds a part's headers: "always" (the described
    request, kill switches, debug sessions: read whatever the shadow state), "enforced" (an
    enforce-mode policy: not under an active global shadow) or "shadow" (a shadow policy)."""

    def __init__(self):
        self.names: dict[str, None] = {}  # ordered set: the HelloReply's header list
        self.raw_keyed: set[str] = set()  # read as one raw value (header:<name> keys and costs)
        self._readers: dict[str, set[str]] = {"always": set(), "enforced": set(), "shadow": set()}
        self.reader = "always"

    def add(self, names, raw: bool = False) -> None:
        for name in names:
            self.names.setdefault(name)
            self._readers[self.reader].add(name)
            if raw:
                self.raw_keyed.add(name)

    def plan(self) -> tuple[tuple[str, ...], dict[str, int], dict[int, bytes], frozenset, frozenset]:
        """(names, name -> position, joins, refused always, refused unless a global shadow is active)."""
        names = tuple(self.names)
        always = frozenset(self._readers["always"])
        return (names, {n: i for i, n in enumerate(names)}, join_plan(names, self.raw_keyed), always,
                frozenset(self._readers["enforced"]) - always)


def resolve(headers: list, joins: dict[int, bytes]) -> tuple[list, list[int] | None]:
    """(one value or None per position, positions of the ambiguous headers or None).

    `headers` as decoded from Decide: bytes, None, or a list of bytes for repeated lines."""
    if list not in map(type, headers):  # the common case: no header was repeated
        return headers, None
    out = list(headers)
    ambiguous = []
    for i, v in enumerate(headers):
        if v.__class__ is not list:
            continue
        if len(v) <= 1:
            out[i] = v[0] if v else None
        elif i in joins:
            out[i] = joins[i].join(v)
        else:
            out[i] = None
            ambiguous.append(i)
    return out, ambiguous or None


def header_text(raw: bytes) -> str:
    """Header bytes as text, one-to-one: two different byte strings never give the same text.

    Valid UTF-8 without U+FFFD (every real key) reads as itself. Anything else (invalid UTF-8,
    or text that already holds U+FFFD) reads as U+FFFD followed by the bytes in hex: text no
    valid value can give, so `b"\\xff"` and `b"\\xfe"` key two counters, not one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _REPLACEMENT + raw.hex()
    if _REPLACEMENT in text:
        return _REPLACEMENT + raw.hex()
    return text
