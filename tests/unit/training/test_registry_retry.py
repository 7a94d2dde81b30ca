from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from training.registry import RegistryUnavailableError, RetryConfig, call_with_retry


def test_transient_failures_are_retried_with_backoff():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise MlflowException("connection refused")
        return "ok"

    retry = RetryConfig(attempts=4, initial_delay_s=0.1, backoff=3.0, max_delay_s=0.2)
    assert call_with_retry(flaky, retry, "op", sleep=sleeps.append) == "ok"
    assert sleeps == [0.1, 0.2]  # backoff, capped


def test_retries_are_bounded_then_fail_cleanly():
    sleeps = []

    def down():
        raise ConnectionError("refused")

    with pytest.raises(RegistryUnavailableError, match="after 3 attempts"):
        call_with_retry(down, RetryConfig(attempts=3, initial_delay_s=0.0), "op", sleeps.append)
    assert len(sleeps) == 2


def test_permanent_errors_are_not_retried():
    calls = []

    def missing():
        calls.append(1)
        raise MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST)

    with pytest.raises(MlflowException):
        call_with_retry(missing, RetryConfig(attempts=5), "op", sleep=lambda s: None)
    assert len(calls) == 1
