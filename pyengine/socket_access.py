"""Who may open the engine socket: its group and mode, and whether nginx's worker user can reach it.

Why: nginx workers that cannot open the socket make every request fail open (200 with
X-Fairvisor-Degraded) with the reason only in nginx's error.log. The engine gives the socket
the configured group and mode, says at start which user or group the workers need, and checks
the worker user it was told about (FAIRVISOR_NGINX_USER, or the `user` line of the system
nginx.conf for `fairvisor engine`): every directory on the path searchable, the socket writable
(connect() on a Unix socket needs write permission on the file).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat

SYSTEM_NGINX_CONF = "/etc/nginx/nginx.conf"
_USER_LINE = re.compile(r"^\s*user\s+([^\s;]+)", re.M)


class SocketAccessError(Exception):
    """The socket cannot be given the configured group; the message says why."""


def group_id(group: str) -> int:
    """A group name or a numeric gid -> the gid (SocketAccessError when this machine has none)."""
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise SocketAccessError(f"FAIRVISOR_ENGINE_SOCKET_GROUP: no group {group!r} on this machine") from None


def apply(path: str, mode: int, group: str | None) -> None:
    """Group first, then mode: the socket is never reachable by more than the final settings allow."""
    if group is not None:
        gid = group_id(group)
        try:
            os.chown(path, -1, gid)
        except PermissionError:
            raise SocketAccessError(
                f"cannot give the engine socket {path} to group {group!r}: the engine's user must be root "
                f"or a member of that group") from None
    os.chmod(path, mode)


def describe(path: str) -> str:
    """'mode 0660, owner fairvisor:www-data' for the log line that says who may connect."""
    st = os.stat(path)
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner {_user_name(st.st_uid)}:{_group_name(st.st_gid)}"


def who_may_connect(path: str) -> str:
    """The sentence the engine logs at start: which nginx worker user or group can open the socket."""
    st = os.stat(path)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o002:
        return "any local user may connect (mode allows others)"
    who = f"user {_user_name(st.st_uid)}"
    if mode & 0o020:
        who += f" or a member of group {_group_name(st.st_gid)}"
    return f"nginx workers must run as {who} (nginx.conf `user`), or set FAIRVISOR_ENGINE_SOCKET_GROUP"


def unreachable_reason(path: str, user: str) -> str | None:
    """Why `user` cannot connect to the socket at `path`, or None when it can."""
    return _access_reason(path, user, 0o2, "write to")


def unreadable_reason(path: str, user: str) -> str | None:
    """Why `user` cannot read the directory `path` (nginx workers load the Lua shim from it), or None."""
    return _access_reason(path, user, 0o5, "read")


def _access_reason(path: str, user: str, bits: int, verb: str) -> str | None:
    try:
        pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
    except KeyError:
        return f"no user {user!r} on this machine"
    if pw.pw_uid == 0:
        return None
    groups = set(os.getgrouplist(pw.pw_name, pw.pw_gid))
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    dirs = []
    while True:
        dirs.append(parent)
        if parent == os.path.dirname(parent):
            break
        parent = os.path.dirname(parent)
    for d in reversed(dirs):
        if not _allowed(os.stat(d), pw.pw_uid, groups, 0o1):
            return f"user {pw.pw_name} may not enter {d}"
    if not _allowed(os.stat(path), pw.pw_uid, groups, bits):
        return f"user {pw.pw_name} may not {verb} {path} ({describe(path)})"
    return None


def system_nginx_user(conf: str = SYSTEM_NGINX_CONF) -> str | None:
    """The `user` of the system nginx.conf (Debian: www-data), or None when absent or unset."""
    try:
        with open(conf) as f:
            m = _USER_LINE.search(f.read())
    except OSError:
        return None
    return m.group(1) if m else None


def _allowed(st: os.stat_result, uid: int, groups: set[int], bits: int) -> bool:
    """Every one of `bits` (r=4, w=2, x=1) granted, by the owner, group or other class as Unix picks it."""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == uid:
        granted = mode >> 6
    elif st.st_gid in groups:
        granted = mode >> 3
    else:
        granted = mode
    return granted & bits == bits


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
