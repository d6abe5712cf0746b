"""`fairvisor validate FILE --against ADMIN_URL`: the change against the bundle in force, and
recent traffic replayed under both (pyengine.bundle_diff, pyengine.what_if)."""

import json
import os
import time

import click

from pyengine.bundle_diff import diff
from pyengine.decision_log import rfc3339_ms

from .admin_client import call
from .output import echo_json, plural, table

EXIT_INVALID = 1
EXIT_UNREACHABLE = 3


def _read(path: str) -> bytes:
    if path == "-":
        return click.get_binary_stream("stdin").read()
    with open(path, "rb") as f:
        return f.read()


def _changes(d: dict) -> list[str]:
    lines = []
    if d["version_accepted"]:
        lines.append(f"  bundle_version {d['version']} > {d['version_in_force']}: a reload would accept it")
    else:
        lines.append(f"  bundle_version {d['version']} is not above {d['version_in_force']}: "
                     "a reload would REFUSE this bundle (raise bundle_version)")
    for key, label in (("policies_added", "policies added"), ("policies_removed", "policies removed"),
                       ("bundle_fields_changed", "bundle fields changed")):
        if d[key]:
            lines.append(f"  {label}: {', '.join(d[key])}")
    for p in d["policies_changed"]:
        parts = [f"{label} {', '.join(p[k])}" for k, label in
                 (("fields", "spec"), ("rules_added", "rules added"), ("rules_removed", "rules removed"),
                  ("rules_changed", "rules changed")) if p[k]]
        lines.append(f"  policy {p['id']} changed: {'; '.join(parts)}")
    if len(lines) == 1:
        lines.append("  no policy or rule changed")
    return lines


def _replay(r: dict) -> list[str]:
    if not r["requests"]:
        return ["Replay: no recent requests recorded by the engine yet"]
    cut = (f", the oldest {r['requests']} of {r['recorded']} recorded (the engine's time budget)"
           if r.get("recorded", r["requests"]) > r["requests"] else "")
    lines = [f"Replay of {plural(r['requests'], 'recent request')} "
             f"({rfc3339_ms(r['from'])} .. {rfc3339_ms(r['to'])}, {r['replay_ms']} ms{cut}):",
             f"  rejected: {r['rejected_before']} under the bundle in force, {r['rejected_after']} under this one"]
    for key, label in (("newly_rejected", "newly rejected"), ("released", "released")):
        rows = r[key]
        lines.append(f"  {label}: {plural(sum(x['requests'] for x in rows), 'request')} "
                     f"of {plural(len({(x['policy'], x['key']) for x in rows}), 'tenant')}")
        if rows:
            lines.append("    " + table(["POLICY", "RULE", "REASON", "KEY", "REQUESTS"],
                                       [[x["policy"], x["rule"], x["reason"], x["key"] or "-", x["requests"]]
                                        for x in rows]).replace("\n", "\n    "))
    if r.get("requests_missing_new_headers"):
        lines.append(f"  note: {plural(r['requests_missing_new_headers'], 'request')} replayed without a header "
                     "this bundle reads (the shim sends only what the bundle in force asks for)")
    return lines


def run_against(path: str, admin_url: str, as_json: bool) -> int:
    from pyengine.errors import PolicyError
    from pyengine.policy.loader import STDIN_SOURCE, count_rules, load_bundle_bytes

    data = _read(path)
    try:
        bundle = load_bundle_bytes(data, STDIN_SOURCE if path == "-" else os.path.basename(path), time.time())
    except PolicyError as exc:  # as plain `validate` prints them; nothing to compare
        for line in exc.errors:
            click.echo(line, err=True)
        return EXIT_INVALID
    if not as_json:
        click.echo(f"Valid: {plural(len(bundle.policies), 'policy', 'policies')}, {plural(count_rules(bundle), 'rule')}")
    candidate = json.loads(data)
    answers = []
    for method, path, body in (("GET", "/v1/admin/bundle", None), ("POST", "/v1/admin/replay", candidate)):
        status, answer = call(admin_url, method, path, body=body)
        if status != 200:
            click.echo(f"fairvisor validate: {admin_url}: {method} {path} answered {status}: "
                       f"{json.dumps(answer)[:500]}", err=True)
            return EXIT_INVALID if status == 422 else EXIT_UNREACHABLE
        answers.append(answer)
    current, replay = answers
    changes = diff(current, candidate)
    if as_json:
        echo_json({"against": admin_url, "changes": changes, "replay": replay})
    else:
        click.echo(f"Against the bundle in force at {admin_url} (version {changes['version_in_force']}):")
        click.echo("\n".join(_changes(changes) + _replay(replay)))
    return 0 if changes["version_accepted"] else EXIT_INVALID
