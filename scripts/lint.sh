#!/usr/bin/env bash
# Static checks run by CI (scripts/test-all.sh): import layers (import-linter), types (mypy: strict on
# the simulator, default elsewhere) and style (ruff).
# The layers map repository folders into one package (pyproject's package-dir), which the checkers'
# import resolution cannot follow in an editable install; so the package is installed, as the wheel
# would be, into a scratch folder and checked there. Errors are reported against the installed copy's
# paths, which mirror the folders: audit_tune/sim/x.py is sim/x.py, audit_tune/cli/x.py is tune/x.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps \
  --target "$STAGE/site" "$ROOT" >/dev/null
rc=0
echo "[lint] import layers (import-linter)" >&2
(cd "$STAGE" && PYTHONPATH="$STAGE/site" lint-imports --no-cache "$ROOT/pyproject.toml") || rc=1
echo "[lint] types (mypy)" >&2
(cd "$STAGE/site" && python3 -m mypy --config-file "$ROOT/pyproject.toml" -p audit_tune) || rc=1
echo "[lint] style (ruff)" >&2
(cd "$ROOT" && ruff check --quiet .) || rc=1
exit $rc
