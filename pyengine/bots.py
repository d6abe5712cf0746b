"""User-agent bot classification for `ua:bot` and `ua:bot_category`: is it a bot, and which kind.

A request is a bot when its User-Agent is empty, names a known bot product token (table below),
or looks like one generically ("bot", "crawl", "spider", ...). Known tokens give the category;
everything else that is a bot is `other_bot`. The category names are fairvisor/edge's, so its
bundles keep their meaning (docs/migrating.md). Matching is by case-insensitive substring and the
longest known token wins ("applebot-extended" over "applebot"). Results are memoised per
User-Agent string (clients repeat theirs), kept in the engine's memo (pyengine.memo).
"""

import re


OTHER_BOT = "other_bot"

# Known product tokens, lower-case, by category. A short list of the crawlers operators ask about
# most; anything else that looks like a bot is `other_bot`.
_KNOWN: dict[str, tuple[str, ...]] = {
    "ai_crawler": ("gptbot", "oai-searchbot", "claudebot", "anthropic-ai", "ccbot", "bytespider",
                   "google-extended", "meta-externalagent", "meta-externalfetcher", "perplexitybot",
                   "amazonbot-ai", "cohere-ai", "diffbot", "omgili", "youbot", "ai2bot"),
    "ai_assistant_user": ("chatgpt-user", "claude-user", "claude-web", "perplexity-user", "mistralai-user"),
    "search_engine": ("googlebot", "bingbot", "applebot", "applebot-extended", "duckduckbot", "yandexbot",
                      "baiduspider", "slurp", "sogou", "seznambot", "naver", "yeti"),
    "social_preview": ("facebookexternalhit", "facebot", "twitterbot", "linkedinbot", "slackbot",
                       "discordbot", "telegrambot", "whatsapp", "pinterestbot", "redditbot", "skypeuripreview"),
    "monitoring_uptime": ("uptimerobot", "pingdom", "statuscake", "site24x7", "newrelicpinger",
                          "datadog agent", "betteruptime", "freshping", "checkly"),
    "seo_research": ("ahrefsbot", "semrushbot", "mj12bot", "dotbot", "rogerbot", "screaming frog",
                     "serpstatbot", "dataforseobot", "blexbot"),
    "archiver": ("ia_archiver", "archive.org_bot", "heritrix", "wayback"),
}
CATEGORIES = tuple(_KNOWN) + (OTHER_BOT,)

# One alternation, longest tokens first, so the first match is the longest known token.
_TOKENS = sorted(((t, c) for c, ts in _KNOWN.items() for t in ts), key=lambda tc: -len(tc[0]))
_CATEGORY_OF = dict(_TOKENS)
_KNOWN_RE = re.compile("|".join(re.escape(t) for t, _ in _TOKENS))
_GENERIC_RE = re.compile(r"bot|crawl|spider|slurp|scrap|headless", re.I)

def bot_category(user_agent: str | None, memo=None) -> str | None:
    """The category of a bot User-Agent, or None for a browser / ordinary client.
    `memo`: the engine's "bot" table (pyengine.memo), or None."""
    if not user_agent:
        return OTHER_BOT  # no User-Agent at all: clients that hide it are scripts
    if memo is not None:
        hit = memo.get(user_agent, False)
        if hit is not False:
            return hit
    lowered = user_agent.lower()
    m = _KNOWN_RE.search(lowered)
    if m is not None:
        category = _longest(lowered, m)
    else:
        category = OTHER_BOT if _GENERIC_RE.search(user_agent) else None
    if memo is None or len(user_agent) > 512:  # long agents are classified every time: the memo stays small
        return category
    return memo.remember(user_agent, category)


def _longest(lowered: str, first) -> str:
    """The leftmost match is not always the longest token present ("googlebot ... applebot-extended")."""
    best = first.group(0)
    for m in _KNOWN_RE.finditer(lowered, first.end()):
        if len(m.group(0)) > len(best):
            best = m.group(0)
    return _CATEGORY_OF[best]
