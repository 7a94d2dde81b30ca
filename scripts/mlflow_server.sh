#!/usr/bin/env bash
# MLflow tracking server of the prod profile: PostgreSQL backend and user store, basic auth,
# artifacts served from MMOPS_MLFLOW_SERVER__ARTIFACTS_DESTINATION (default data_dir/mlartifacts).
# Needs MMOPS_MLFLOW_SERVER__ADMIN_PASSWORD (12+ characters); see docs/scale-out.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m flows.services mlflow "$@"
