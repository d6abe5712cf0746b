"""Agent guards: loop detection, the spend circuit breaker and kill-switch hit counters."""
