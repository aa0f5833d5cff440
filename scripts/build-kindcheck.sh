#!/usr/bin/env bash
# Build the strict kind-config checker (go/kindcheck) and the kind CLI (sigs.k8s.io/kind,
# same pinned version) into ${AUDIT_TUNE_CACHE:-$HOME/.cache/audit-tune}/bin.
# Rebuilt only when missing or when go/kindcheck/{go.mod,go.sum,*.go} changed.
# Usage: scripts/build-kindcheck.sh [kindcheck] [kind]   (default: both); FORCE=1 to rebuild.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${AUDIT_TUNE_CACHE:-$HOME/.cache/audit-tune}"
BIN="$CACHE/bin"
MOD="$ROOT/go/kindcheck"
mkdir -p "$BIN"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

log() { printf '[build-kindcheck] %s\n' "$*" >&2; }

build() {
  local name="$1" pkg="$2" out="$BIN/$1" want have="" t0
  want="$(cd "$MOD" && go list -m -f '{{.Path}}@{{.Version}}' sigs.k8s.io/kind) $(cat "$MOD"/go.mod "$MOD"/go.sum "$MOD"/*.go | sha256sum | cut -c1-16)"
  [[ -f "$out.stamp" ]] && have="$(cat "$out.stamp")"
  if [[ -x "$out" && "$have" == "$want" && -z "${FORCE:-}" ]]; then
    log "$name up to date ($want) at $out"; return 0
  fi
  log "building $name ($want) -> $out"
  t0=$(date +%s)
  (cd "$MOD" && nice -n 10 go build -trimpath -ldflags "-s -w" -o "$out.tmp.$$" "$pkg")
  mv -f "$out.tmp.$$" "$out"
  echo "$want" > "$out.stamp"
  log "built $name in $(( $(date +%s) - t0 ))s, size $(du -h "$out" | cut -f1)"
}

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(kindcheck kind)
exec 9>"$CACHE/.build-kindcheck.lock"
flock 9
for t in "${targets[@]}"; do
  case "$t" in
    kindcheck) build kindcheck . ;;
    kind) build kind sigs.k8s.io/kind ;;
    *) log "unknown target '$t' (valid: kindcheck, kind)"; exit 1 ;;
  esac
done
