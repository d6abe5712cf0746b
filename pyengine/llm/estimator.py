"""Learns characters per token, per model, from settled usage: better prompt estimates and stream counts.

Every settled response tells us the truth: the provider's prompt_tokens for the prompt
characters we measured, and its completion_tokens for the output characters the shim counted.
An exponentially weighted mean (weight `ALPHA` for the newest sample) follows each model's
ratio; ratios are clamped to [MIN, MAX] chars/token and samples far outside are ignored, so one
odd response cannot poison the estimate. Bounded: at most MAX_MODELS models are tracked.
"""

DEFAULT_CHARS_PER_TOKEN = 4.0
MIN_CHARS_PER_TOKEN = 1.0
MAX_CHARS_PER_TOKEN = 12.0
ALPHA = 0.2
MIN_SAMPLE_TOKENS = 8  # tiny samples are mostly rounding noise
MAX_MODELS = 256


class CharsPerToken:
    __slots__ = ("_ratio",)

    def __init__(self):
        self._ratio: dict[str, float] = {}

    def get(self, model: str | None) -> float:
        return self._ratio.get(model or "", DEFAULT_CHARS_PER_TOKEN)

    def observe(self, model: str | None, chars: int, tokens: int | None) -> bool:
        """Fold one (chars, tokens) sample in; returns whether it was used."""
        if tokens is None or tokens < MIN_SAMPLE_TOKENS or chars <= 0:
            return False
        sample = chars / tokens
        if not MIN_CHARS_PER_TOKEN <= sample <= MAX_CHARS_PER_TOKEN:
            return False
        key = model or ""
        old = self._ratio.get(key)
        if old is None:
            if len(self._ratio) >= MAX_MODELS:
                return False
            self._ratio[key] = sample
        else:
            self._ratio[key] = old + ALPHA * (sample - old)
        return True


class Estimator:
    """Separate ratios for prompts (JSON text we parsed) and outputs (SSE text the shim counted)."""

    def __init__(self):
        self.prompt = CharsPerToken()
        self.output = CharsPerToken()
