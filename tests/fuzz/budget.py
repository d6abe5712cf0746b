"""Example budgets for the fuzz properties: small under `make test`, FAIRVISOR_FUZZ_EXAMPLES under `make fuzz`."""

import os

from hypothesis import HealthCheck, settings

ENV = "FAIRVISOR_FUZZ_EXAMPLES"


def fuzz(ci_examples: int) -> settings:
    """Hypothesis settings running `ci_examples` inputs, or $FAIRVISOR_FUZZ_EXAMPLES when set.

    No example database (runs are independent and CI stays reproducible) and no deadline (a
    10,000-example run on a loaded machine must not fail on timing)."""
    n = int(os.environ.get(ENV) or 0) or ci_examples
    return settings(max_examples=n, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])
