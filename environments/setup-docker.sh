#!/usr/bin/env bash
# Idempotent setup of a real Docker engine and the swe-srl sandbox images on a bare Debian/Ubuntu
# machine (CI, or a fresh dev box), as root. No registry is needed: the base image is built
# offline from Debian packages (debootstrap -> docker import), task images on top of it.
#
#   bash environments/setup-docker.sh            # engine + base image + every demo task image
#   SWE_SRL_SKIP_IMAGES=1 bash environments/...  # engine only
#   SWE_SRL_DEBIAN_MIRROR=URL bash environments/...  # debootstrap from that mirror (else its default)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup-docker] %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (installs packages and starts dockerd)"; exit 1
fi

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# No service manager runs here: start dockerd ourselves unless an engine already answers.
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/dockerd.log)"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/dockerd.log"; tail -20 /var/log/dockerd.log; exit 1; }
fi
log "engine up: $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"

if [ "${SWE_SRL_SKIP_IMAGES:-0}" = "1" ]; then exit 0; fi

# Base image (debootstrap rootfs cached under ~/.cache/swe-srl) + one image per demo task.
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
"$PY" -m swe_srl.cli env build
