"""msgspec Structs for the policy bundle (contract §1): field names, types, defaults, ranges.

These Structs catch what a type can express: unknown fields, missing fields, wrong types,
enums and numeric ranges. Checks that span fields or need a good message at a precise path
(burst vs. rate, staged-action order, limit-key syntax, duplicates, expiry) live in
`pyengine.policy.checks`; `pyengine.policy.loader` runs both passes. Every loaded Struct is
shared read-only by the decision path: never mutate one after `load_bundle_*` returned it.

Units: rates are per second/minute as named; token counts are ints; money is USD (floats
here, converted to integer micro-dollars by whoever keeps counters); times are tz-aware
datetimes.
"""

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta

from ..algorithms.concurrency import MAX_IN_FLIGHT
from ..algorithms.outcome import MAX_DELAY_MS  # throttle delays are capped: a stage cannot hold a connection for minutes
from ..decision.numbers import POLICY_MAX

# Annotated scalar types shared by the Structs below. `gt=0` also refuses NaN (NaN > 0 is
# false); infinity is refused by the semantic pass, since no Meta bound expresses "finite".
PositiveFloat = Annotated[float, Meta(gt=0)]
NonNegativeFloat = Annotated[float, Meta(ge=0)]
PositiveInt = Annotated[int, Meta(ge=1)]
NonEmptyStr = Annotated[str, Meta(min_length=1)]
# RFC 3339 with an offset; a naive timestamp is ambiguous, so it is refused.
Timestamp = Annotated[datetime, Meta(tz=True)]

Algorithm = Literal["token_bucket", "token_bucket_llm", "cost_based", "concurrency"]
Period = Literal["5m", "1h", "1d", "7d", "1mo"]
StageAction = Literal["warn", "throttle", "reject"]
LoopAction = Literal["reject", "throttle", "warn"]
Mode = Literal["enforce", "shadow"]
Estimator = Literal["simple_word", "header_hint"]  # fairvisor/edge's names (docs/migrating.md)
OnMissingKey = Literal["skip", "reject", "shared"]
Consistency = Literal["local", "strict"]  # contract §9; strict only for STRICT_ALGORITHMS (checks)


class _Schema(msgspec.Struct, forbid_unknown_fields=True):
    """Base: unknown fields are errors (inherited). Subclasses that list a required field after
    an optional one say `kw_only=True`, which msgspec does not inherit."""


class Selector(_Schema):
    """Which requests a policy sees. Exactly one of pathPrefix/pathExact (checked later)."""

    pathPrefix: str | None = None  # segment-aware prefix, see docs/policy.md
    pathExact: str | None = None
    methods: list[NonEmptyStr] | None = None  # uppercased by the loader; None = any method
    hosts: list[NonEmptyStr] | None = None  # lowercased by the loader; None = any host


class TokenBucketConfig(_Schema, kw_only=True):
    """`token_bucket`: continuous refill at tokens_per_second up to burst; starts full."""

    tokens_per_second: PositiveFloat | None = None
    rps: PositiveFloat | None = None  # alias; normalised into tokens_per_second, then None
    burst: PositiveFloat
    cost_source: str = "fixed"  # "fixed" | "header:<name>" | "query:<name>"
    fixed_cost: PositiveFloat = 1.0  # charged when cost_source is "fixed"
    default_cost: PositiveFloat = 1.0  # charged when the header/query value is absent or bad

    def __post_init__(self) -> None:
        # The alias is resolved here so a directly constructed config is as usable as a loaded
        # one; downstream code reads tokens_per_second only.
        if (self.tokens_per_second is None) == (self.rps is None):
            raise ValueError("exactly one of tokens_per_second or rps is required")
        if self.rps is not None:
            self.tokens_per_second = self.rps
            self.rps = None


class TokenSource(_Schema):
    """Accepted from fairvisor/edge bundles: both estimators mean this edge's own prompt
    estimate (learned characters per token), overridden by X-Token-Estimate when sent."""

    estimator: Estimator = "simple_word"


class TokenBucketLLMConfig(_Schema):
    """`token_bucket_llm`: tokens per minute (and optionally per UTC day), reserve then settle."""

    tokens_per_minute: PositiveInt
    tokens_per_day: PositiveInt | None = None
    burst_tokens: PositiveInt | None = None  # None on the wire means tokens_per_minute
    max_tokens_per_request: PositiveInt | None = None  # prompt + completion reservation
    max_prompt_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None  # also caps the streaming allowance
    default_max_completion: PositiveInt = 1000  # reserved when the request names no max
    # fairvisor/edge spellings (docs/migrating.md): an alias of default_max_completion (folded
    # in by checks), and the prompt estimator choice.
    default_max_completion_tokens: PositiveInt | None = None
    token_source: TokenSource | None = None

    def __post_init__(self) -> None:
        if self.burst_tokens is None:
            self.burst_tokens = self.tokens_per_minute


class StagedAction(_Schema):
    """One budget stage: at threshold_percent of the budget, warn, throttle or reject."""

    # 0 is allowed (fairvisor/edge: "between 0 and 100"): a warn stage at 0 warns from the start.
    threshold_percent: Annotated[float, Meta(ge=0, le=100)]
    action: StageAction
    # Only for "throttle", where it is required (checked later).
    delay_ms: Annotated[int, Meta(ge=0, le=MAX_DELAY_MS)] | None = None


class CostBasedConfig(_Schema, kw_only=True):
    """`cost_based`: a budget per UTC-aligned period, with staged actions as it fills."""

    # In the cost unit; USD when cost_key is "llm_usd". Bounded like every capacity (POLICY_MAX):
    # a clamped client cost must still exceed it.
    budget: Annotated[float, Meta(gt=0, le=POLICY_MAX)]
    period: Period
    cost_key: str = "fixed"  # "fixed" | "header:<name>" | "query:<name>" | "llm_usd"
    fixed_cost: PositiveFloat = 1.0
    default_cost: PositiveFloat = 1.0
    staged_actions: list[StagedAction]  # strictly ascending, ends with reject at 100


class ConcurrencyConfig(_Schema, kw_only=True):
    """`concurrency`: requests in flight per key; each is released when its answer ends, or by
    itself after lease_s (a request never reported finished stops counting then)."""

    max_in_flight: Annotated[int, Meta(ge=1, le=MAX_IN_FLIGHT)]
    lease_s: Annotated[float, Meta(gt=0, le=86_400)] = 300.0  # seconds


AlgorithmConfig = Union[TokenBucketConfig, TokenBucketLLMConfig, CostBasedConfig, ConcurrencyConfig]

# Which config Struct each algorithm's `algorithm_config` object decodes into.
CONFIG_TYPES: dict[str, type[_Schema]] = {
    "token_bucket": TokenBucketConfig,
    "token_bucket_llm": TokenBucketLLMConfig,
    "cost_based": CostBasedConfig,
    "concurrency": ConcurrencyConfig,
}

if TYPE_CHECKING:
    _AlgorithmConfigField = AlgorithmConfig
else:
    # The wire schema of algorithm_config depends on the sibling `algorithm`, which a plain
    # msgspec type cannot express. So msgspec decodes it as a bare object, and the loader
    # converts it with CONFIG_TYPES in a second step (keeping the full JSON path in errors).
    # After load_bundle_* it is always an AlgorithmConfig, as the type checker is told.
    _AlgorithmConfigField = dict[str, Any]


class Rule(_Schema):
    """One limiter: keyed by limit_keys, applied when every `match` entry holds."""

    name: NonEmptyStr  # unique within its policy; also the RateLimit item name
    limit_keys: Annotated[list[str], Meta(min_length=1)]  # compound key, in this order
    algorithm: Algorithm
    algorithm_config: _AlgorithmConfigField
    match: dict[str, str] | None = None  # limit key -> required value
    # A request without a value for a limit key: skip the rule, reject it (missing_limit_key),
    # or count it on one counter shared by every such request.
    on_missing_key: OnMissingKey = "skip"
    # Fleet mode (contract §9): "local" decides from this engine's counters, synced every
    # FAIRVISOR_SYNC_INTERVAL_MS; "strict" makes each decision one atomic operation in the store.
    consistency: Consistency = "local"


class LoopDetection(_Schema):
    """Reject/throttle/warn when identical requests repeat within a sliding window.

    A disabled block is ignored; window and threshold are required when enabled (checks)."""

    enabled: bool = False
    window_seconds: PositiveFloat | None = None
    threshold_identical_requests: Annotated[int, Meta(ge=2)] | None = None
    action: LoopAction = "reject"
    similarity: str = "exact"  # only "exact" exists (checks says why)


class CircuitBreaker(_Schema):
    """Open when spend per sliding minute exceeds the threshold; half-open after the reset.

    A disabled block is ignored; threshold and a reset > 0 are required when enabled (checks)."""

    enabled: bool = False
    spend_rate_threshold_per_minute: PositiveFloat | None = None  # cost units or tokens per minute
    auto_reset_after_minutes: NonNegativeFloat | None = None
    action: str = "reject"  # only "reject" exists (checks says why)
    alert: bool = False  # log the opening at ERROR level with alert=true (pyengine.guards)


class FallbackRule(Rule, kw_only=True):
    """`fallback_limit`: a Rule whose name may be left out (fairvisor/edge bundles do)."""

    name: NonEmptyStr = "fallback_limit"


class PolicySpec(_Schema):
    selector: Selector
    mode: Mode = "enforce"
    rules: list[Rule] = []
    fallback_limit: FallbackRule | None = None  # used when no rule's `match` applies
    loop_detection: LoopDetection | None = None
    circuit_breaker: CircuitBreaker | None = None


class Policy(_Schema):
    id: NonEmptyStr  # unique in the bundle; keys state, metrics and logs
    spec: PolicySpec


class KillSwitch(_Schema):
    """Reject every request whose scope_key has scope_value (optionally under a route)."""

    scope_key: str  # any limit key
    scope_value: str
    route: str | None = None  # a path prefix, same segment semantics as Selector.pathPrefix
    reason: str | None = None
    expires_at: Timestamp | None = None  # expired entries are ignored, not errors


class GlobalShadow(_Schema):
    """Put every policy in shadow mode while enabled and not expired."""

    enabled: bool
    reason: str | None = None
    expires_at: Timestamp | None = None


class KillSwitchOverride(_Schema):
    """Skip every kill switch while enabled and not expired (fairvisor/edge's incident override)."""

    enabled: bool
    reason: str | None = None
    expires_at: Timestamp | None = None


class ModelPrice(_Schema):
    """USD per million tokens; 0 is allowed (free or self-hosted models). Cached input (prompt
    cache reads) and cache writes cost the input price when not given."""

    input_usd_per_mtok: NonNegativeFloat
    output_usd_per_mtok: NonNegativeFloat
    cached_input_usd_per_mtok: NonNegativeFloat | None = None
    cache_write_usd_per_mtok: NonNegativeFloat | None = None


class Bundle(_Schema, kw_only=True):
    bundle_version: Annotated[int, Meta(gt=0)]  # a reload must carry a strictly higher one
    issued_at: Timestamp | None = None
    expires_at: Timestamp | None = None  # an expired bundle is refused at load
    policies: list[Policy]
    kill_switches: list[KillSwitch] = []
    global_shadow: GlobalShadow | None = None
    kill_switch_override: KillSwitchOverride | None = None
    # fairvisor/edge's free-form `defaults` object: it has no effect there either (docs/migrating.md).
    defaults: dict[str, Any] = {}
    pricing: dict[NonEmptyStr, ModelPrice] = {}  # model name (or "*") -> price
