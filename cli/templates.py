"""Starter policies for `fairvisor init`: each passes `validate` and shows one way of working.

Every rule keyed on something a client may leave out says what happens then (on_missing_key,
docs/policy.md): the default, "skip", would let such a request past that rule unlimited.
"""

API = {
    "bundle_version": 1,
    "policies": [{
        "id": "api",
        "spec": {
            "selector": {"pathPrefix": "/api/"},
            "mode": "enforce",
            "rules": [{
                # skip: this rule applies only to the partner's key (`match`); every other
                # request, with or without a key, falls back to the per-ip rule below.
                "name": "per-api-key",
                "limit_keys": ["header:x-api-key"],
                "match": {"header:x-api-key": "partner-gold"},
                "on_missing_key": "skip",
                "algorithm": "token_bucket",
                "algorithm_config": {"tokens_per_second": 50, "burst": 100},
            }],
            # Every other caller: per client address, 5 requests/s with bursts of 10.
            "fallback_limit": {
                "name": "per-ip",
                "limit_keys": ["ip:address"],
                "algorithm": "token_bucket",
                "algorithm_config": {"tokens_per_second": 5, "burst": 10},
            },
        },
    }],
}

LLM = {
    "bundle_version": 1,
    "policies": [{
        "id": "llm",
        "spec": {
            # "/", not "/v1/": Gemini's /v1beta/ paths (what many SDK versions call) are LLM calls too.
            "selector": {"pathPrefix": "/", "methods": ["POST"]},
            "mode": "enforce",
            "rules": [
                {
                    # reject: an LLM call without an org claim would pass the token and money
                    # limits (the per-ip rule alone is no spend limit), so it is refused.
                    "name": "org-tpm",
                    "limit_keys": ["jwt:org_id"],
                    "on_missing_key": "reject",
                    "algorithm": "token_bucket_llm",
                    "algorithm_config": {"tokens_per_minute": 60000, "tokens_per_day": 2000000,
                                         "max_prompt_tokens": 32000, "default_max_completion": 1000},
                },
                {
                    "name": "org-daily-usd",
                    "limit_keys": ["jwt:org_id"],
                    "on_missing_key": "reject",
                    "algorithm": "cost_based",
                    "algorithm_config": {
                        "budget": 50, "period": "1d", "cost_key": "llm_usd",
                        "staged_actions": [
                            {"threshold_percent": 80, "action": "warn"},
                            {"threshold_percent": 95, "action": "throttle", "delay_ms": 500},
                            {"threshold_percent": 100, "action": "reject"},
                        ],
                    },
                },
                {
                    "name": "per-ip",
                    "limit_keys": ["ip:address"],
                    "algorithm": "token_bucket",
                    "algorithm_config": {"tokens_per_second": 2, "burst": 20},
                },
            ],
        },
    }],
    "pricing": {
        "gpt-4o-mini": {"input_usd_per_mtok": 0.15, "output_usd_per_mtok": 0.6},
        "*": {"input_usd_per_mtok": 5.0, "output_usd_per_mtok": 15.0},
    },
}

AGENT_GUARD = {
    "bundle_version": 1,
    "policies": [{
        "id": "agent-guard",
        "spec": {
            # "/", not "/v1/": Gemini's /v1beta/ paths (what many SDK versions call) are LLM calls too.
            "selector": {"pathPrefix": "/", "methods": ["POST"]},
            "mode": "enforce",
            "rules": [
                {
                    # shared: agents that send no X-Agent-Id still work, but together they get
                    # one agent's allowance, not one each and not an unlimited one.
                    "name": "agent-tpm",
                    "limit_keys": ["header:x-agent-id"],
                    "on_missing_key": "shared",
                    "algorithm": "token_bucket_llm",
                    "algorithm_config": {"tokens_per_minute": 20000, "max_tokens_per_request": 16000},
                },
                {
                    "name": "agent-daily-usd",
                    "limit_keys": ["header:x-agent-id"],
                    "on_missing_key": "shared",
                    "algorithm": "cost_based",
                    "algorithm_config": {
                        "budget": 10, "period": "1d", "cost_key": "llm_usd",
                        "staged_actions": [
                            {"threshold_percent": 80, "action": "warn"},
                            {"threshold_percent": 100, "action": "reject"},
                        ],
                    },
                },
            ],
            "loop_detection": {"enabled": True, "window_seconds": 60, "threshold_identical_requests": 5,
                               "action": "reject"},
            "circuit_breaker": {"enabled": True, "spend_rate_threshold_per_minute": 100000,
                                "auto_reset_after_minutes": 5},
        },
    }],
    "pricing": {"*": {"input_usd_per_mtok": 3.0, "output_usd_per_mtok": 15.0}},
}

TEMPLATES = {"api": API, "llm": LLM, "agent-guard": AGENT_GUARD}

_COMMON_ENV = """\
# Fairvisor edge settings, for `fairvisor run --env-file THIS_FILE` (or systemd's EnvironmentFile).
# Every variable has an equal flag, and a flag wins: `fairvisor run --help` lists them all.
FAIRVISOR_CONFIG_FILE={policy}
FAIRVISOR_LISTEN=0.0.0.0:8080
# open: let traffic through (X-Fairvisor-Degraded) when the engine does not answer; closed: 503.
FAIRVISOR_FAIL_MODE=open
FAIRVISOR_ENGINE_TIMEOUT_MS=100
FAIRVISOR_STATE_DIR=/var/lib/fairvisor
FAIRVISOR_TRUSTED_PROXIES=127.0.0.0/8,::1
FAIRVISOR_WORKER_PROCESSES=auto
FAIRVISOR_LOG_LEVEL=info
# Decision log (`fairvisor logs --help` reads it): default <state dir>/decisions.jsonl; "off" disables it.
FAIRVISOR_DECISION_LOG=/var/lib/fairvisor/decisions.jsonl
FAIRVISOR_DECISION_LOG_MAX_MB=64
# hashed (keyed with a per-install secret) or raw tenant keys in the decision log and `fairvisor status`.
FAIRVISOR_LOG_KEYS=hashed
"""

_PROXY_ENV = """\
FAIRVISOR_MODE=reverse_proxy
FAIRVISOR_BACKEND_URL=https://llm-provider.example.com
# auto: each request in its own provider's format (/openai, /anthropic, /gemini prefixes, or the
# request's path).
FAIRVISOR_LLM_FORMAT=auto
# Per-provider upstreams and keys, for one edge before all three:
# FAIRVISOR_BACKEND_URL_ANTHROPIC=https://api.anthropic.com
# FAIRVISOR_BACKEND_URL_GEMINI=https://generativelanguage.googleapis.com
# FAIRVISOR_ANTHROPIC_UPSTREAM_HEADER_X_Api_Key=...
"""

_MODE_ENV = {
    "api": "# Answer nginx auth_request / gateway sub-requests on POST /v1/decision.\n"
           "FAIRVISOR_MODE=decision_service\n",
    "llm": "# Proxy LLM traffic inline and answer rejections in the provider's error shape.\n" + _PROXY_ENV,
    "agent-guard": _PROXY_ENV,
}


def env_example(template: str, policy_path: str) -> str:
    return _MODE_ENV[template] + _COMMON_ENV.format(policy=policy_path)
