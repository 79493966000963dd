#!/usr/bin/env bash
# The project's two entry points, used by README.md and .ci/run:
#   tools/dev.sh demo   create (or reuse) the venv, install weightcodec, encode/inspect/decode the bundled example
#   tools/dev.sh test   the same venv, then the test suite
# The venv (~5.5 GB with torch) lives outside the checkout so that every clone reuses it:
# $WEIGHTCODEC_VENV, default ~/.cache/weightcodec/venv.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${WEIGHTCODEC_VENV:-$HOME/.cache/weightcodec/venv}"
PY="${PYTHON:-python3}"

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "weightcodec needs Python >= 3.11 ($PY is older; set PYTHON=)" >&2; exit 1; }
    echo "creating venv at $VENV (first time only: installs torch, a few minutes)" >&2
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "is ignored: it is neither" >&2 || true
  "$VENV/bin/python" -c "import weightcodec, torch, av" || { echo "installation failed" >&2; exit 1; }
}

case "${1:-}" in
  demo)
    ensure_venv
    out=build/demo
    mkdir -p "$out"
    "$VENV/bin/wcodec" encode data/digits_mlp.pt -o "$out/digits_mlp.wcodec" --qp 28 --force
    "$VENV/bin/wcodec" info "$out/digits_mlp.wcodec"
    "$VENV/bin/wcodec" decode "$out/digits_mlp.wcodec" -o "$out/digits_mlp_restored.pt" --force
    "$VENV/bin/python" -m tools.sweep --model digits-mlp --weights data/digits_mlp.pt --qp 22,28,34,40 --out "$out/sweep"
    ;;
  test)
    ensure_venv
    "$VENV/bin/python" -m pytest -q "${@:2}"
    ;;
  *)
    echo "usage: tools/dev.sh demo|test [pytest args]" >&2
    exit 2
    ;;
esac
