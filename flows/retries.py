"""When a task is worth retrying: the one ``retry_condition_fn`` of every mmops task.

Errors derived from :class:`features.errors.PermanentError` (no champion yet, invalid
config, empty window, a corrupt file that needs an operator) fail the task at once; every
other error (a server down, a lock held, a timeout) uses the task's retries.
"""

from __future__ import annotations

from features.errors import PermanentError


def is_permanent(error: BaseException | None) -> bool:
    """Whether ``error`` (or an error it was raised from) is a :class:`PermanentError`."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, PermanentError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _exception_of(state) -> BaseException | None:
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    try:
        state.result()
    except BaseException as error:  # noqa: BLE001 - the failure is what we inspect
        return error
    return None


def retry_unless_permanent(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task run unless its error is permanent."""
    return not is_permanent(_exception_of(state))


__all__ = ["is_permanent", "retry_unless_permanent"]
