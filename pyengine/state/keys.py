"""The one owner of state keys: every counter's key is built here from its parts, and read back here.

A key is ``modifiers namespace field*``:

* modifiers: ``~`` (shadow state: never touches enforce counters) and ``D`` (the TPD day
  counter kept beside a TPM bucket key), in the order they were applied;
* namespace: one letter, ``R`` rule counters, ``L`` loop-detection windows, ``B`` circuit
  breakers, ``K`` kill-switch hit counters, ``T`` self-test scratch counters (a run id, then
  the rule key the request would have had: never a tenant's counter, pyengine.selftest);
* fields: each text part as ``<len>:<text>`` (length in code points), or ``-`` for "the
  request had no value" (a rule with ``on_missing_key: shared``).

Length prefixes make the field sequence prefix-free: whatever a part contains (NUL, \\x1f,
"~", ":", digits) it cannot end early or run into the next part, so two different tuples
never give one key, and no client value can reach the modifier or namespace positions, which
hold only characters no field starts with. `parse` is the exact inverse of the builders
(tests/fuzz/test_state_keys_fuzz.py). A key of the old format (before length prefixes)
never parses: `is_state_key` says so, and restore skips it.
"""

SHADOW = "~"
DAY = "D"
RULE = "R"
LOOP = "L"
BREAKER = "B"
KILL_HITS = "K"
SELFTEST = "T"
ABSENT = "-"

_MODIFIERS = frozenset(SHADOW + DAY)
_NAMESPACES = frozenset(RULE + LOOP + BREAKER + KILL_HITS + SELFTEST)


class KeyFormatError(ValueError):
    """A string that no builder of this module produces."""


def field(text: str) -> str:
    return f"{len(text)}:{text}"


def _prefix(namespace: str, policy_id: str, shadow: bool) -> str:
    return (SHADOW if shadow else "") + namespace + field(policy_id)


# -- builders ---------------------------------------------------------------------------

def rule_prefix(policy_id: str, rule_name: str, shadow: bool = False) -> str:
    """What every key of one rule starts with; compiled once per rule."""
    return _prefix(RULE, policy_id, shadow) + field(rule_name)


def unmodified(key: str) -> str:
    """The key without its modifiers: the counter's identity, shared by its shadow and day twins."""
    return key.lstrip(SHADOW + DAY)


def one_value(prefix: str, value: str) -> str:
    """The key of a single-key rule (the hot path: one f-string)."""
    return f"{prefix}{len(value)}:{value}"


def values_key(prefix: str, values) -> str:
    """The key of a compound rule: every value length-prefixed, in limit_keys order."""
    return prefix + "".join([f"{len(v)}:{v}" for v in values])


def absent(prefix: str) -> str:
    """The one counter a rule with on_missing_key "shared" keeps for requests without its key."""
    return prefix + ABSENT


def shadow(key: str) -> str:
    """The shadow twin of an enforce key (global shadow counts beside enforce state)."""
    return SHADOW + key


def day(key: str) -> str:
    """The TPD counter kept beside the TPM bucket `key`."""
    return DAY + key


def loop_prefix(policy_id: str, shadow: bool = False) -> str:
    return _prefix(LOOP, policy_id, shadow)


def breaker_prefix(policy_id: str, shadow: bool = False) -> str:
    return _prefix(BREAKER, policy_id, shadow)


def kill_hits(switch_id: str) -> str:
    return KILL_HITS + field(switch_id)


def selftest(run_id: str, key: str) -> str:
    """The scratch twin of rule key `key` for one self-test run: its own namespace, so no
    self-test request charges, reads or resets a tenant's counter."""
    return SELFTEST + field(run_id) + field(key)


# -- readers ----------------------------------------------------------------------------

class ParsedKey:
    __slots__ = ("modifiers", "namespace", "fields")

    def __init__(self, modifiers: str, namespace: str, fields: tuple):
        self.modifiers = modifiers
        self.namespace = namespace
        self.fields = fields  # texts, None for an ABSENT field

    @property
    def shadow(self) -> bool:
        return SHADOW in self.modifiers

    def __eq__(self, other):
        return isinstance(other, ParsedKey) and (self.modifiers, self.namespace, self.fields) == \
            (other.modifiers, other.namespace, other.fields)

    def __repr__(self):
        return f"ParsedKey({self.modifiers!r}, {self.namespace!r}, {self.fields!r})"


def parse(key: str) -> ParsedKey:
    """The parts of `key`; KeyFormatError for any string no builder produces."""
    i, n = 0, len(key)
    while i < n and key[i] in _MODIFIERS:
        i += 1
    if i >= n or key[i] not in _NAMESPACES:
        raise KeyFormatError(f"no namespace at {i}")
    modifiers, namespace = key[:i], key[i]
    i += 1
    fields: list = []
    while i < n:
        if key[i] == ABSENT:
            fields.append(None)
            i += 1
            continue
        colon = key.find(":", i)
        digits = key[i:colon]
        # ASCII digits only, no leading zero: exactly one spelling per length.
        if colon < 0 or not digits.isascii() or not digits.isdigit() or (len(digits) > 1 and digits[0] == "0"):
            raise KeyFormatError(f"bad field length at {i}")
        end = colon + 1 + int(digits)
        if end > n:
            raise KeyFormatError(f"field at {i} runs past the end")
        fields.append(key[colon + 1:end])
        i = end
    _check_shape(namespace, fields)
    return ParsedKey(modifiers, namespace, tuple(fields))


def _check_shape(namespace: str, fields: list) -> None:
    """Field counts the builders make: R policy, rule, then values or one ABSENT; L and B
    policy, value; K switch id; T run id, a rule key. ABSENT stands only where a rule's values would."""
    n = len(fields)
    if namespace == RULE:
        ok = n >= 3 and None not in fields[:2] and (None not in fields[2:] or fields[2:] == [None])
    elif namespace == KILL_HITS:
        ok = n == 1 and fields[0] is not None
    elif namespace == SELFTEST:
        ok = n == 2 and None not in fields and is_state_key(fields[1]) and not fields[1].startswith(SELFTEST)
    else:
        ok = n == 2 and None not in fields
    if not ok:
        raise KeyFormatError(f"{n} fields do not fit namespace {namespace}")


def is_state_key(key) -> bool:
    """True for a key this module builds (restore skips others: an older format, or garbage)."""
    if key.__class__ is not str:
        return False
    try:
        parse(key)
    except KeyFormatError:
        return False
    return True


def is_shadow(key: str) -> bool:
    return key.startswith(SHADOW)


def rule_values(key: str) -> tuple:
    """The limit-key values of a rule key (enforce or shadow); () for the shared missing-key counter."""
    parsed = parse(key)
    if parsed.namespace != RULE:
        raise KeyFormatError("not a rule key")
    return tuple(v for v in parsed.fields[2:] if v is not None)


def policy_of(key: str) -> str:
    """The policy id every namespace but K carries as its first field."""
    parsed = parse(key)
    if parsed.namespace in (KILL_HITS, SELFTEST):
        raise KeyFormatError("no policy id")
    return parsed.fields[0]


def kill_switch_id(key: str) -> str:
    parsed = parse(key)
    if parsed.namespace != KILL_HITS:
        raise KeyFormatError("not a kill-switch key")
    return parsed.fields[0]
