#!/usr/bin/env bash
# Prefect server of the prod profile on PostgreSQL (asyncpg), at MMOPS_PREFECT_API_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m flows.services prefect "$@"
