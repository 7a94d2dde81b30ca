"""Which failures a task retries: permanent errors never, everything else yes."""

from __future__ import annotations

import pytest
from prefect.states import Failed

from features.errors import EmptyWindowError, InvalidConfigError, NoChampionError, PermanentError
from features.state_io import CorruptStateError
from flows.retries import is_permanent, retry_unless_permanent
from training.registry import RegistryUnavailableError


@pytest.mark.parametrize(
    "error",
    [
        NoChampionError("no champion"),
        EmptyWindowError("no rows"),
        InvalidConfigError("bad"),
        CorruptStateError(__import__("pathlib").Path("/x"), None, "re-ingest", "truncated"),
    ],
)
def test_permanent_errors_are_not_retried(error):
    assert isinstance(error, PermanentError)
    assert retry_unless_permanent(None, None, Failed(data=error)) is False


@pytest.mark.parametrize(
    "error", [ConnectionError("refused"), TimeoutError(), RegistryUnavailableError("down")]
)
def test_transient_errors_are_retried(error):
    assert retry_unless_permanent(None, None, Failed(data=error)) is True


def test_a_permanent_cause_makes_the_wrapper_permanent():
    try:
        try:
            raise NoChampionError("none")
        except NoChampionError as inner:
            raise RuntimeError("scoring failed") from inner
    except RuntimeError as outer:
        assert is_permanent(outer)
    assert not is_permanent(None)


def test_typed_errors_keep_their_builtin_families():
    assert isinstance(NoChampionError("x"), LookupError)
    assert isinstance(EmptyWindowError("x"), ValueError)
    assert isinstance(InvalidConfigError("x"), ValueError)
