"""The admin API's kill switches and overrides in force: on the pipeline, in the bundle, expiring, counted.

The records themselves live in pyengine.overlay (the registry and its file); this module
puts them into effect. A switch reaches the pipeline through its index (only while there is
one, so the hot path tests one attribute); an override is installed into the compiled rules
of its scope; a switch on a header the policy never reads recompiles the bundle under a new
generation, so the shim sends that header from its next request. In fleet mode the whole
overlay can be replaced by the fleet's (pyengine.fleet.overlay_sync).
"""

from .overlay.overrides import install as install_overrides


class RuntimeOverlay:
    def __init__(self, overlay, policy, pipeline, store, metrics, decision_log, clock):
        self.overlay = overlay  # pyengine.overlay.registry.Overlay: the records
        self.policy = policy  # pyengine.policy_holder.PolicyHolder: the bundle they act on
        self.pipeline = pipeline
        self.store = store
        self.metrics = metrics
        self.decision_log = decision_log
        self.clock = clock

    def _install(self, scope) -> None:
        install_overrides(self.policy.bundle, self.overlay.overrides.values(), self.store, scope)

    def changed(self, scope: tuple[str, str] | None = None) -> None:
        """A runtime switch or override was added or removed: in force for the next request.
        `scope` (scope_key, value) is an override's, for reinstalling only that value."""
        self.sync_pipeline()
        b = self.policy.bundle
        if b is None:
            return
        if not self.overlay.index.headers() <= set(b.header_names):
            self.policy.compile(b.source, b.hash, new_generation=True)
        elif scope is not None:
            self._install(scope)
        self.count_switches(self.clock.now_s())

    def replaced(self, switches: list, overrides: list) -> bool:
        """The fleet's overlay, read from the shared store, replaces this engine's.
        True when anything changed."""
        before = {(r.scope_key, r.scope_value, r.id) for r in self.overlay.overrides.values()}
        if not self.overlay.replace(switches, overrides):
            return False
        after = {(r.scope_key, r.scope_value, r.id) for r in overrides}
        self.changed()  # switches, and a recompile when they read new headers
        if self.policy.bundle is not None:
            for scope in {(k, v) for k, v, _ in before ^ after}:
                self._install(scope)
        return True

    def sync_pipeline(self) -> None:
        """The pipeline sees the runtime switch index only while it holds any."""
        index = self.overlay.index
        self.pipeline.runtime_switches = index if index.by_key else None

    def expire(self, now_s: float) -> None:
        """Drop what expired (upkeep, every second), audited in the decision log."""
        switches, overrides = self.overlay.expire(now_s)
        if switches:
            self.sync_pipeline()
        for rec in switches:
            self.decision_log.admin(now_s, "kill_switch_expired", rec, "engine")
        for rec in overrides:
            self.decision_log.admin(now_s, "override_expired", rec, "engine")
            if self.policy.bundle is not None:
                self._install((rec.scope_key, rec.scope_value))

    def count_switches(self, now_s: float) -> None:
        """fairvisor_kill_switch_active: the bundle's and the runtime ones still in force."""
        b = self.policy.bundle
        switches = b.kill_switches if b is not None else ()
        active = sum(1 for ks in switches if ks.expires_at_s is None or now_s < ks.expires_at_s)
        self.metrics.kill_switch_active.set((), active + self.overlay.active_switches(now_s))
