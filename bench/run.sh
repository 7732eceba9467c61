#!/usr/bin/env bash
# One command for the benchmark (issue G): installs the plugin into ./.venv if needed, then trains
# and evaluates fairseq's AR transformer, CMLM and this plugin's model on the same data-bin.
#   bash bench/run.sh --data DATA_BIN --device {cpu,cuda} --minutes M [--size tiny|small|base] [--quick]
# All flags: python bench/run.py --help.  Results: bench/results/<date>-<device>.{md,png}.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
EXTRAS=test source "$ROOT/scripts/setup_env.sh"
exec python "$ROOT/bench/run.py" "$@"
