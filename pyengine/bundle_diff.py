"""What a candidate bundle changes against the one in force: policies, rules and bundle fields."""


def _by(items, field: str) -> dict:
    return {x.get(field): x for x in items or () if isinstance(x, dict)}


def _changed_fields(old: dict, new: dict, skip: tuple = ()) -> list[str]:
    return sorted(k for k in set(old) | set(new) if k not in skip and old.get(k) != new.get(k))


def _rules(spec: dict) -> dict:
    rules = _by(spec.get("rules"), "name")
    if spec.get("fallback_limit") is not None:
        rules["(fallback_limit)"] = spec["fallback_limit"]
    return rules


def diff(current: dict, candidate: dict) -> dict:
    """Both bundles as parsed JSON. Names listed sorted; a changed policy says which of its
    spec fields changed and which rules were added, removed or changed."""
    old_p, new_p = _by(current.get("policies"), "id"), _by(candidate.get("policies"), "id")
    changed = []
    for pid in sorted(set(old_p) & set(new_p)):
        old_spec, new_spec = old_p[pid].get("spec") or {}, new_p[pid].get("spec") or {}
        if old_p[pid] == new_p[pid]:
            continue
        old_r, new_r = _rules(old_spec), _rules(new_spec)
        changed.append({
            "id": pid,
            "fields": _changed_fields(old_spec, new_spec, skip=("rules", "fallback_limit")),
            "rules_added": sorted(set(new_r) - set(old_r)),
            "rules_removed": sorted(set(old_r) - set(new_r)),
            "rules_changed": sorted(n for n in set(old_r) & set(new_r) if old_r[n] != new_r[n]),
        })
    old_v, new_v = current.get("bundle_version"), candidate.get("bundle_version")
    return {
        "version_in_force": old_v,
        "version": new_v,
        # A reload refuses an equal or lower version (pyengine.engine load_bytes).
        "version_accepted": isinstance(new_v, int) and isinstance(old_v, int) and new_v > old_v,
        "policies_added": sorted(set(new_p) - set(old_p)),
        "policies_removed": sorted(set(old_p) - set(new_p)),
        "policies_changed": changed,
        "bundle_fields_changed": _changed_fields(current, candidate, skip=("policies", "bundle_version")),
    }
