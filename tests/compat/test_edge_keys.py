"""ip:asn, ip:type, ip:tor, ua:bot and ua:bot_category: values from upstream headers and the
User-Agent, as fairvisor/edge defines them; hostile bytes never crash and never merge keys."""

import pytest

from pyengine.decision.bots import CATEGORIES, bot_category
from pyengine.decision.keys import IP_TYPES, KEY_VALUES, TrustedProxies, headers_needed, make_extractor
from pyengine.decision.request import RequestView


def view(**headers) -> RequestView:
    names = list(headers)
    return RequestView(method="GET", path="/", query="", host="h", remote_addr="127.0.0.1",
                       _headers=[v if isinstance(v, bytes) else v.encode("utf-8", "surrogatepass")
                                 for v in (headers[n] for n in names)], _index={n: i for i, n in enumerate(names)}, body=None)


def value(key: str, **headers):
    return make_extractor(key, TrustedProxies([]))(view(**{k.replace("_", "-"): v for k, v in headers.items()}))


def test_headers_needed_names_the_upstream_headers():
    assert headers_needed("ip:asn") == ("x-asn",)
    assert headers_needed("ip:type") == ("x-asn-type",)
    assert headers_needed("ip:tor") == ("x-tor-exit",)
    assert headers_needed("ua:bot_category") == ("user-agent",)


@pytest.mark.parametrize("raw, want", [("13335", "13335"), ("AS13335", "13335"), (" as13335 ", "13335"),
                                       ("ASN-x", "ASN-x"), ("", None), (None, None), ("  ", None)])
def test_asn(raw, want):
    assert value("ip:asn", **({} if raw is None else {"x_asn": raw})) == want


@pytest.mark.parametrize("raw, want", [("hosting", "hosting"), (" ISP ", "isp"), ("education_research",
                                       "education_research"), ("cloud", "unknown"), ("", "unknown"), (None, "unknown")])
def test_ip_type_is_one_of_the_documented_values(raw, want):
    got = value("ip:type", **({} if raw is None else {"x_asn_type": raw}))
    assert got == want and got in IP_TYPES


@pytest.mark.parametrize("raw, want", [("1", "true"), ("TRUE", "true"), ("yes", "true"), ("0", "false"),
                                       ("no", "false"), ("maybe", "false"), (None, "false")])
def test_tor_is_true_or_false(raw, want):
    assert value("ip:tor", **({} if raw is None else {"x_tor_exit": raw})) == want


@pytest.mark.parametrize("ua, category", [
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
     "ai_crawler"),
    ("Mozilla/5.0 (compatible; ChatGPT-User/1.0; +https://openai.com/bot)", "ai_assistant_user"),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "search_engine"),
    ("Mozilla/5.0 (Macintosh) Applebot-Extended/0.1", "search_engine"),
    ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "social_preview"),
    ("Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)", "monitoring_uptime"),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", "seo_research"),
    ("ia_archiver (+http://www.alexa.com/site/help/webmasters)", "archiver"),
    ("my-little-crawler/0.1", "other_bot"),
    ("", "other_bot"),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0", None),
])
def test_bot_categories(ua, category):
    assert bot_category(ua) == category
    assert value("ua:bot_category", user_agent=ua) == category
    assert value("ua:bot", user_agent=ua) == ("false" if category is None else "true")  # the two always agree


def test_value_sets_are_what_the_loader_checks_against():
    assert KEY_VALUES["ua:bot_category"] == CATEGORIES and "other_bot" in CATEGORIES
    assert KEY_VALUES["ip:tor"] == ("true", "false") and KEY_VALUES["ip:type"] == IP_TYPES


@pytest.mark.parametrize("key", ["ip:asn", "ip:type", "ip:tor", "ua:bot", "ua:bot_category"])
def test_hostile_header_bytes_never_crash(key):
    header = headers_needed(key)[0]
    for raw in (b"\xff\xfe\x80AS1", "\x00\x01\xff", "\ufffd" * 5000, "AS" + "9" * 5000, "a;b=c\r\n", "\u202egptbot", "ＧＰＴＢｏｔ"):
        got = make_extractor(key, TrustedProxies([]))(view(**{header: raw}))
        assert got is None or isinstance(got, str)
    assert value("ip:asn", x_asn="64500\x00") != value("ip:asn", x_asn="64500")
