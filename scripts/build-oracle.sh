#!/usr/bin/env bash
# Build the Go oracle (go/oracle) into a cache outside the repository:
#   ${AUDIT_TUNE_CACHE:-$HOME/.cache/audit-tune}/bin/audit-tune-oracle
# It is rebuilt only when the hash of go/oracle/{go.mod,go.sum,*.go} changes; the hash is kept
# next to the binary (audit-tune-oracle.sha256). Modules come from the Go module proxy.
# Usage: bash scripts/build-oracle.sh [--force]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$repo/go/oracle"
cache="${AUDIT_TUNE_CACHE:-$HOME/.cache/audit-tune}"
bin="$cache/bin/audit-tune-oracle"
stamp="$bin.sha256"

command -v go >/dev/null 2>&1 || { echo "build-oracle: error: 'go' not found on PATH (need Go >= 1.26)" >&2; exit 1; }

hash="$(cd "$src" && LC_ALL=C ls go.mod go.sum *.go | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
hash="$hash $(go env GOVERSION)"

if [[ "${1:-}" != "--force" && -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
  echo "build-oracle: up to date: $bin (build time: 0s, cached)"
  exit 0
fi

mkdir -p "$cache/bin"
tmp="$(mktemp "$bin.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
start=$(date +%s.%N)
# go.sum is committed: -mod=readonly fails instead of silently changing dependencies.
(cd "$src" && nice -n 10 go build -mod=readonly -trimpath -o "$tmp" .)
chmod +x "$tmp"
mv -f "$tmp" "$bin"
trap - EXIT
echo "$hash" > "$stamp"
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" -v b="$bin" 'BEGIN { printf "build-oracle: built %s (build time: %.1fs)\n", b, e - s }'
