#!/usr/bin/env bash
# Build the real-stack binaries (kube-apiserver, etcd) from pinned Go modules into
#   ${AUDIT_TUNE_CACHE:-$HOME/.cache/audit-tune}/bin
# A binary is rebuilt only when it is missing or its stamp (pinned version + hash of
# the build module's go.mod/go.sum) changed. Builds run under `nice -n 10`.
#
# Usage: scripts/build-stack.sh [kube-apiserver] [etcd]     (default: both)
#        FORCE=1 scripts/build-stack.sh                      (rebuild regardless)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${AUDIT_TUNE_CACHE:-$HOME/.cache/audit-tune}"
BIN="$CACHE/bin"
mkdir -p "$BIN"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
# k8s.io/kubernetes v1.37.x declares `go 1.26.0`; the local go 1.26.8 is enough. If a
# future pin needs a newer Go, uncomment (served by the Go module proxy):
# export GOTOOLCHAIN=go1.27.3

log() { printf '[build-stack] %s\n' "$*" >&2; }

# stamp MODDIR MODULE -> "<module>@<version> <hash>"
stamp() {
  local moddir="$1" module="$2" ver hash
  ver="$(cd "$moddir" && go list -m -f '{{.Version}}' "$module")"
  hash="$(cat "$moddir/go.mod" "$moddir/go.sum" | sha256sum | cut -c1-16)"
  echo "$module@$ver $hash"
}

# build NAME MODDIR MODULE PACKAGE [LDFLAGS]
build() {
  local name="$1" moddir="$2" module="$3" pkg="$4" ldflags="${5:-}"
  local out="$BIN/$name" want have="" t0 t1
  want="$(stamp "$moddir" "$module")"
  [[ -f "$out.stamp" ]] && have="$(cat "$out.stamp")"
  if [[ -x "$out" && "$have" == "$want" && -z "${FORCE:-}" ]]; then
    log "$name up to date ($want) at $out"
    return 0
  fi
  log "building $name ($want) -> $out"
  t0=$(date +%s)
  (cd "$moddir" && nice -n 10 go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp.$$" "$pkg")
  mv -f "$out.tmp.$$" "$out"
  echo "$want" > "$out.stamp"
  t1=$(date +%s)
  log "built $name in $((t1 - t0))s, size $(du -h "$out" | cut -f1)"
}

build_kube_apiserver() {
  local moddir="$ROOT/go/build/kube-apiserver" ver major minor
  ver="$(cd "$moddir" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
  major="${ver#v}"; major="${major%%.*}"
  minor="${ver#v*.}"; minor="${minor%%.*}"
  local v="k8s.io/component-base/version" cv="k8s.io/client-go/pkg/version" ld=""
  for p in "$v" "$cv"; do
    ld+=" -X $p.gitVersion=$ver -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld+=" -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  build kube-apiserver "$moddir" k8s.io/kubernetes k8s.io/kubernetes/cmd/kube-apiserver "$ld"
}

build_etcd() {
  build etcd "$ROOT/go/build/etcd" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3
}

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(etcd kube-apiserver)

# One build at a time per cache (tests and people may call this concurrently).
exec 9>"$CACHE/.build.lock"
flock 9
T0=$(date +%s)
for t in "${targets[@]}"; do
  case "$t" in
    kube-apiserver) build_kube_apiserver ;;
    etcd) build_etcd ;;
    *) log "unknown target '$t' (valid: kube-apiserver, etcd)"; exit 1 ;;
  esac
done
log "done in $(( $(date +%s) - T0 ))s; binaries in $BIN"
