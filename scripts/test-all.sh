#!/usr/bin/env bash
# Install everything the tests need, build the Go parts, and run every test.
#   bash scripts/test-all.sh [pytest args...]
# Steps (each idempotent; a rerun only does what is missing):
#   1. Debian packages: prometheus (+promtool), chromium, chromium-driver   (scripts/install-system.sh)
#   2. Python package with test extras                                       (pip install -e '.[test]')
#   3. Go binaries into ${AUDIT_TUNE_CACHE:-~/.cache/audit-tune}/bin:
#      oracle over k8s.io/apiserver, kube-apiserver + etcd, kind config checker
#   4. pytest over tests/ (nothing is skipped: a missing binary or package fails its tests),
#      the parallel-safe modules on 2 workers first, then the serial ones
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
t0=$(date +%s)
step() { printf '\n[test-all] %s (t+%ss)\n' "$*" "$(( $(date +%s) - t0 ))" >&2; }

step "system packages"
bash scripts/install-system.sh
step "python package"
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
step "go: oracle"
bash scripts/build-oracle.sh
step "go: kube-apiserver + etcd"
bash scripts/build-stack.sh
step "go: kind config checker"
bash scripts/build-kindcheck.sh
# Pure-computation modules run on every core (pytest-xdist); the rest, marked "serial" in
# tests/conftest.py (real stack, oracle, sink, load tests: timing-sensitive), run alone after.
step "pytest: parallel part"
rc=0
python3 -m pytest -p no:cacheprovider -n "${AUDIT_TUNE_TEST_WORKERS:-2}" -m "not serial" "$@" || rc=$?
step "pytest: serial part"
python3 -m pytest -p no:cacheprovider -m serial "$@" || rc=$?
step "done (exit $rc)"
exit "$rc"
