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
  # The venv is shared by every clone. The first clone installs weightcodec into it (editable, so
  # `wcodec` is on PATH); any other clone (a CI checkout, a worktree) installs only the
  # dependencies, so it never re-points the venv away from the checkout that owns it. The commands
  # below always run this checkout's code (PYTHONPATH), whichever owns the venv.
  owner=$("$VENV/bin/python" - <<'PYEOF' 2>/dev/null || true
import importlib.metadata as md, json, os
try:
    url = json.loads(md.distribution("weightcodec").read_text("direct_url.json") or "{}").get("url", "")
except md.PackageNotFoundError:
    url = ""
path = url.removeprefix("file://")
print(path if path and os.path.isdir(path) else "")
PYEOF
)
  if [ -z "$owner" ] || [ "$owner" = "$PWD" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "is ignored: it is neither" >&2 || true
  else
    echo "the venv's weightcodec is $owner's checkout: installing only the dependencies for $PWD" >&2
    "$VENV/bin/python" - <<'PYEOF' > "$VENV/.wcodec-deps.txt"
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
todo, seen, reqs = ["dev"], set(), list(project["dependencies"])
while todo:
    for req in extras[todo.pop()]:
        if req.startswith("weightcodec["):
            todo += [e for e in req[len("weightcodec["):-1].split(",") if e not in seen]
            seen.update(todo)
        else:
            reqs.append(req)
print("\n".join(reqs))
PYEOF
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$VENV/.wcodec-deps.txt" >&2
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  "$VENV/bin/python" -c "import weightcodec, torch, av" || { echo "installation failed" >&2; exit 1; }
}

case "${1:-}" in
  demo)
    ensure_venv
    out=build/demo
    mkdir -p "$out"
    "$VENV/bin/python" -m weightcodec.cli encode data/digits_mlp.pt -o "$out/digits_mlp.wcodec" --qp 28 --force
    "$VENV/bin/python" -m weightcodec.cli info "$out/digits_mlp.wcodec"
    "$VENV/bin/python" -m weightcodec.cli decode "$out/digits_mlp.wcodec" -o "$out/digits_mlp_restored.pt" --force
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
