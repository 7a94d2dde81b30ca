"""Errors that no retry can fix.

A task that raises one of these fails at once instead of waiting out its retries:
the cause (no champion yet, an invalid configuration, an empty window, a corrupt file
that needs an operator) is still there on the next attempt. ``flows.retries`` turns
this into a Prefect ``retry_condition_fn``.
"""

from __future__ import annotations


class PermanentError(Exception):
    """Base class of errors that retrying the same call cannot fix."""


class NoChampionError(PermanentError, LookupError):
    """No registered version holds the ``champion`` alias yet."""


class InvalidConfigError(PermanentError, ValueError):
    """A configuration or parameter is invalid."""


class EmptyWindowError(PermanentError, ValueError):
    """A window holds no rows to work on."""


__all__ = ["EmptyWindowError", "InvalidConfigError", "NoChampionError", "PermanentError"]
