#!/usr/bin/env bash
# Installs the test dependencies into ./.venv (created if absent) and runs the test suite.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
EXTRAS=test source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
python -m pytest tests -q -p no:cacheprovider "$@"
