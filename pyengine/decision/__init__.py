"""The decision path: request view, key extractors, compiled rules, route plans, verdicts."""
