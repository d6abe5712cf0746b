"""CLI output: aligned tables, colour only on a terminal (click strips it when piped), JSON on request."""

import json

import click

ACTION_COLOURS = {"allow": "green", "ok": "green", "matched": "green", "reject": "red", "hit": "red",
                  "not_ready": "red", "unreachable": "red", "warn": "yellow", "throttle": "yellow",
                  "would_reject": "magenta", "skipped": "bright_black", "not_reached": "bright_black"}


def paint(text: str, action: str | None = None, bold: bool = False) -> str:
    """`text` styled for `action` (see ACTION_COLOURS); click.echo drops the codes off a TTY."""
    fg = ACTION_COLOURS.get(action or text)
    return click.style(text, fg=fg, bold=bold or None) if fg or bold else text


def table(headers: list[str], rows: list[list], colour_column: int | None = None) -> str:
    """Columns padded to their widest plain cell; `colour_column` cells are painted by value."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    last = len(headers) - 1

    def line(row, header=False):
        out = []
        for i, c in enumerate(row):
            pad = "" if i == last else " " * (widths[i] - len(c))
            shown = click.style(c, bold=True) if header else (paint(c) if i == colour_column else c)
            out.append(shown + pad)
        return "  ".join(out).rstrip()

    return "\n".join([line(headers, header=True)] + [line(r) for r in cells])


def plural(count: int, one: str, many: str | None = None) -> str:
    """"1 policy", "2 policies", "0 rules": the count with the word it takes."""
    return f"{count} {one if count == 1 else (many or one + 's')}"


def echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2))


def fail(message: str, code: int) -> None:
    """Print `message` on stderr and exit with `code` (1 failed, 2 usage or input error)."""
    click.echo(message, err=True)
    raise SystemExit(code)
