#!/usr/bin/env bash
# Source this file: creates ./.venv if absent and installs the plugin (and extras) into it.
#   EXTRAS=test source scripts/setup_env.sh
# TORCH_SPEC overrides the torch requirement installed first (default torch==2.13.0, whose CPU
# wheel is found locally on the project machines; an unpinned torch pulls CUDA packages).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
if ! python -c "import torch" 2>/dev/null; then
  echo "[setup] installing ${TORCH_SPEC:-torch==2.13.0}"
  pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
spec="."
[ -n "${EXTRAS:-}" ] && spec=".[${EXTRAS}]"
stamp="$VENV/.plugin-installed-$(cat "$ROOT/setup.py" | cksum | cut -d' ' -f1)-${EXTRAS:-none}"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing the plugin ($spec) into $VENV"
  (cd "$ROOT" && pip install -q -e "$spec")
  touch "$stamp"
fi
