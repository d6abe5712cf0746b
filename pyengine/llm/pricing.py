"""What a model's tokens cost: the bundle's `pricing`, then the bundled dated catalogue, then `"*"`.

Prices are USD per million tokens, which is micro-USD per token. They are held as integer
pico-USD per token (x 10**6, rounded once at load), so a cost is an exact integer sum and is
rounded up to whole micro-USD once, never by float arithmetic (0.15 x 100 is 15.000000000000002
as floats, which a ceil would make 16 micro-USD).

A catalogue model matches its own name and its dated or aliased ids: `claude-3-5-haiku-latest`
and `gpt-4o-mini-2024-07-18` take the longest catalogue name they start with, followed by `-`.
"""

import json
from importlib.resources import files

from ..memo import table

PICO_PER_MICRO = 10**6
CATALOGUE_FILE = "prices.json"


class Price:
    """One model's prices in pico-USD per token; cached input and cache writes default to the
    input price when the entry gives none (a provider that does not discount them)."""

    __slots__ = ("model", "source", "input", "output", "cached_input", "cache_write")

    def __init__(self, model: str, source: str, input_usd_per_mtok: float, output_usd_per_mtok: float,
                 cached_input_usd_per_mtok: float | None = None, cache_write_usd_per_mtok: float | None = None):
        self.model, self.source = model, source  # source: "bundle" or "catalogue"
        self.input = _pico(input_usd_per_mtok)
        self.output = _pico(output_usd_per_mtok)
        self.cached_input = self.input if cached_input_usd_per_mtok is None else _pico(cached_input_usd_per_mtok)
        self.cache_write = self.input if cache_write_usd_per_mtok is None else _pico(cache_write_usd_per_mtok)

    def usd_micros(self, prompt_tokens: int, completion_tokens: int, cached_input_tokens: int = 0,
                   cache_write_tokens: int = 0) -> int:
        """The cost, rounded up to whole micro-USD. `prompt_tokens` counts every input token,
        the cached and cache-written ones included; each is at most what the prompt holds."""
        cached = min(cached_input_tokens, prompt_tokens)
        written = min(cache_write_tokens, prompt_tokens - cached)
        pico = ((prompt_tokens - cached - written) * self.input + cached * self.cached_input
                + written * self.cache_write + completion_tokens * self.output)
        return -(-pico // PICO_PER_MICRO)


def _pico(usd_per_mtok: float) -> int:
    return round(usd_per_mtok * PICO_PER_MICRO)


def load_catalogue() -> dict:
    """The bundled catalogue as stored: {"date", "source", "models": {name: entry}}."""
    return json.loads(files("pyengine.llm").joinpath(CATALOGUE_FILE).read_text())


_CATALOGUE = load_catalogue()
CATALOGUE_DATE = _CATALOGUE["date"]
_PRICES = {name: Price(name, "catalogue", e["input_usd_per_mtok"], e["output_usd_per_mtok"],
                       e.get("cached_input_usd_per_mtok"), e.get("cache_write_usd_per_mtok"))
           for name, e in _CATALOGUE["models"].items()}
_BY_LENGTH = sorted(_PRICES, key=len, reverse=True)  # longest first: gpt-4o-mini before gpt-4o


def catalogue_price(model: str) -> Price | None:
    p = _PRICES.get(model)
    if p is not None:
        return p
    for name in _BY_LENGTH:
        if model.startswith(name) and model[len(name):len(name) + 1] == "-":
            return _PRICES[name]
    return None


class Pricing:
    """The prices a bundle's `llm_usd` rules use, looked up once per model name."""

    __slots__ = ("_own", "_star", "_memo")

    def __init__(self, bundle_pricing: dict, memo=None):
        """`memo`: this bundle's "price" table (pyengine.memo): model names are client bytes."""
        self._own = {m: Price(m, "bundle", p.input_usd_per_mtok, p.output_usd_per_mtok,
                              p.cached_input_usd_per_mtok, p.cache_write_usd_per_mtok)
                     for m, p in bundle_pricing.items()}
        self._star = self._own.pop("*", None)
        self._memo = table("price") if memo is None else memo

    def price(self, model: str | None) -> Price | None:
        """The bundle's entry, the catalogue's, then `"*"`; None: no price (unknown_model_price)."""
        if not model:
            return self._star
        hit = self._memo.get(model, False)
        if hit is not False:
            return hit
        p = self._own.get(model) or catalogue_price(model) or self._star
        return self._memo.remember(model, p) if len(model) <= 256 else p
