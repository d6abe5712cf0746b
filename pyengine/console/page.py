"""GET /status: the live status page, one self-contained HTML file (no CDN, no build step) read once."""

from importlib import resources

_PAGE: str | None = None


def page_reply() -> tuple[int, str, str]:
    global _PAGE
    if _PAGE is None:
        _PAGE = resources.files(__package__).joinpath("status.html").read_text(encoding="utf-8")
    return 200, "text/html; charset=utf-8", _PAGE
