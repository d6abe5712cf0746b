"""Before `fairvisor run` starts anything: can nginx bind the public and the admin listener?

A second instance on the same machine would otherwise find 127.0.0.1:9090 (the admin default)
taken and leave nginx retrying; this names the address, the variable and the way out.
"""

from __future__ import annotations

import re
import socket


class ListenInUse(Exception):
    """A listener's address cannot be bound; the message names the variable and the fix."""


_FIX = {
    "FAIRVISOR_LISTEN": "give this instance another FAIRVISOR_LISTEN (--listen)",
    "FAIRVISOR_ADMIN_LISTEN": ("give this instance's admin listener a port of its own "
                               "(FAIRVISOR_ADMIN_LISTEN=127.0.0.1:9091, --admin-listen) or turn it off "
                               "(FAIRVISOR_ADMIN_LISTEN=off)"),
}


def _addresses(listen: str):
    """(family, sockaddr) pairs nginx would bind for "host:port", "[v6]:port" or "port"."""
    host, _, port = listen.rpartition(":") if ":" in listen else ("", "", listen)
    host = host.strip("[]")
    if host in ("", "*"):
        host = "0.0.0.0"
    infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return [(family, addr) for family, _, _, _, addr in infos[:1]]


def check_bind(listen: str, var: str) -> None:
    """Raises ListenInUse when `listen` cannot be bound now (in use, not ours, not permitted)."""
    try:
        pairs = _addresses(listen)
    except (OSError, ValueError) as exc:
        raise ListenInUse(f"{var} {listen}: cannot resolve: {exc}") from None
    for family, addr in pairs:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nginx does: TIME_WAIT is fine
            try:
                sock.bind(addr)
            except OSError as exc:
                raise ListenInUse(f"{var} {listen}: cannot listen: {exc.strerror or exc}; {_FIX[var]}") from None


def check_listeners(settings) -> None:
    """Every address `fairvisor run`'s nginx will listen on, public first."""
    check_bind(settings.listen, "FAIRVISOR_LISTEN")
    if settings.admin_listen != "off":
        check_bind(settings.admin_listen, "FAIRVISOR_ADMIN_LISTEN")


_EMERG = re.compile(r"\[emerg\] \d+#\d+: (.*)")


def last_emerg(error_log: str) -> str | None:
    """nginx's last fatal error from its error log (e.g. a bind() failure), or None."""
    try:
        with open(error_log, errors="replace") as f:
            lines = f.readlines()[-50:]
    except OSError:
        return None
    found = [m.group(1).strip() for line in lines if (m := _EMERG.search(line))]
    return found[-1] if found else None
