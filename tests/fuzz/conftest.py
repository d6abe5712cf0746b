"""Every fuzz property runs with engine errors re-raised: the engine answers its own exceptions
with engine_error (a rejection), which would otherwise hide a bug a property just found."""

import pytest

from pyengine.engine_errors import EngineErrors


@pytest.fixture(autouse=True)
def engine_errors_raise(monkeypatch):
    def record(self, where):
        raise  # noqa: PLE0704 - called inside the engine's `except` block: re-raise what it caught

    monkeypatch.setattr(EngineErrors, "record", record)
