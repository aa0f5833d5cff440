#!/usr/bin/env bash
# Idempotent install of the system packages the real-stack tests need (Debian/apt):
#   prometheus (+ promtool, --no-install-recommends), chromium, chromium-driver, openssl, strace
#   (the sink crash-point test stops the sink before each fsync and rename with strace).
# Does nothing when every command is already present; runs `apt-get update` only when
# a package has no install candidate (empty or stale lists). Needs root (or sudo).
set -euo pipefail

# command -> package
declare -A PKG=(
  [prometheus]=prometheus
  [promtool]=prometheus
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [openssl]=openssl
  [strace]=strace
)

log() { printf '[install-system] %s\n' "$*" >&2; }

missing=()
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG[$cmd]}")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  log "all present: ${!PKG[*]}"
  exit 0
fi
# de-duplicate
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { log "need root or sudo to install: ${missing[*]}"; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -o DPkg::Lock::Timeout=600 -y -q)

need_update=0
for p in "${missing[@]}"; do
  cand="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')"
  if [[ -z "$cand" || "$cand" == "(none)" ]]; then need_update=1; fi
done
if [[ $need_update -eq 1 ]]; then
  log "apt-get update (no install candidate for some of: ${missing[*]})"
  $SUDO "${APT[@]}" update
fi
log "installing: ${missing[*]}"
t0=$(date +%s)
$SUDO "${APT[@]}" install --no-install-recommends "${missing[@]}"
log "installed in $(( $(date +%s) - t0 ))s"
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || { log "still missing after install: $cmd"; exit 1; }
done
