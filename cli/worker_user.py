"""Which user nginx's workers run as, and the socket group that lets them reach the engine (never root)."""

from __future__ import annotations

import grp
import os
import pwd

# Under `fairvisor run` started as root: the first of these that exists, unless FAIRVISOR_NGINX_USER says.
UNPRIVILEGED_DEFAULTS = ("www-data", "nobody")


class WorkerUserError(ValueError):
    """The worker user cannot be used; the message names the variable."""


def _account(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name) if not name.isdigit() else pwd.getpwuid(int(name))
    except KeyError:
        raise WorkerUserError(f"FAIRVISOR_NGINX_USER: no user {name!r} on this machine") from None


def root_workers(settings) -> tuple[str, str] | None:
    """(user, group) for nginx's `user` line when this process is root; None otherwise (workers stay as us)."""
    if os.geteuid() != 0:
        return None
    names = (settings.nginx_user,) if settings.nginx_user else UNPRIVILEGED_DEFAULTS
    for name in names:
        try:
            pw = _account(name)
        except WorkerUserError:
            if settings.nginx_user:
                raise
            continue
        if pw.pw_uid == 0:
            raise WorkerUserError("FAIRVISOR_NGINX_USER: nginx workers never run as root; name an unprivileged user")
        return pw.pw_name, grp.getgrgid(pw.pw_gid).gr_name
    raise WorkerUserError(f"run as root, but none of {', '.join(UNPRIVILEGED_DEFAULTS)} exists for nginx's workers: "
                          "set FAIRVISOR_NGINX_USER")


def run_env(settings, env: dict) -> None:
    """`fairvisor run` as root: the engine checks the workers' user and gives the socket their group."""
    workers = root_workers(settings)
    if workers is None:
        return
    env["FAIRVISOR_NGINX_USER"] = workers[0]
    env.setdefault("FAIRVISOR_ENGINE_SOCKET_GROUP", settings.engine_socket_group or workers[1])


def root_workers_problem(settings, shim_dir: str) -> str | None:
    """Run as root: why the unprivileged workers could not work (reach the socket, read the shim), or None."""
    from pyengine.socket_access import unreachable_reason, unreadable_reason

    workers = root_workers(settings)
    if workers is None:
        return None
    reason = unreachable_reason(settings.engine_socket, workers[0]) or unreadable_reason(shim_dir, workers[0])
    if reason is None:
        return None
    return (f"nginx workers run as {workers[0]} (never root), and {reason}: run `fairvisor run` as an "
            f"unprivileged user that owns the state dir, or set FAIRVISOR_NGINX_USER, FAIRVISOR_STATE_DIR "
            f"(e.g. /var/lib/fairvisor) so that user can reach them")


def engine_notice(settings, system_user: str | None) -> str:
    """What `fairvisor engine` prints before it starts: who must be able to open the socket."""
    group = settings.engine_socket_group or grp.getgrgid(os.getegid()).gr_name
    mode = settings.engine_socket_mode
    who = f"user {pwd.getpwuid(os.geteuid()).pw_name}"
    if mode & 0o020:
        who += f" or group {group}"
    if mode & 0o002:
        who = "any local user"
    line = f"fairvisor engine: socket {settings.engine_socket} (mode {mode:04o}): nginx workers must run as {who}"
    user = settings.nginx_user or system_user
    if user:
        source = "FAIRVISOR_NGINX_USER" if settings.nginx_user else "/etc/nginx/nginx.conf"
        line += f"; yours run as {user} ({source}), checked once the socket is up"
    return line
