"""The engine's exception types: one per layer, each caught at exactly one boundary."""


class FairvisorError(Exception):
    """Base of every error the engine raises on purpose."""


class PolicyError(FairvisorError):
    """A policy bundle was refused. Caught by the loader's callers (start-up, reload, `validate`).

    `errors` holds every problem found, each already formatted as
    ``<file>: <json path>: <message>`` so callers print them verbatim. `located` holds the same
    as (json path, message) pairs when the raiser had them apart (the loader), for JSON output.
    """

    def __init__(self, errors: list[str], located: list[tuple[str, str]] | None = None):
        self.errors = list(errors)
        self.located = located
        super().__init__("\n".join(self.errors))

    @classmethod
    def at(cls, source: str, located: list[tuple[str, str]]) -> "PolicyError":
        """From (json path, message) pairs found in `source` (a file name or <stdin>)."""
        return cls([f"{source}: {path}: {message}" for path, message in located], list(located))


class ProtocolError(FairvisorError):
    """A frame from the shim could not be understood. Caught by the connection, which answers
    with an error frame (framing intact) or closes the connection (framing lost)."""

    def __init__(self, code: str, message: str):
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class StoreError(FairvisorError):
    """The state store failed. Caught by the decision path, where the fail mode is applied once."""
