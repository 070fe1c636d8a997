#!/usr/bin/env bash
# Shared by scripts/install_*.sh (sourced, not run): the checks every installer makes first, and
# the undoing of Docker images' dpkg rules that silently drop a folder's files.

# require_root_apt NAME: NAME must run as root on Debian or Ubuntu (apt-get); noninteractive apt.
require_root_apt() {
  local name=$1
  if [[ $(id -u) -ne 0 ]]; then
    echo "$name: must run as root (apt-get install)" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null; then
    echo "$name: apt-get not found: Debian or Ubuntu only" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
}

# allow_dpkg_path NAME FOLDER BACKUP WHAT: comment out every `path-exclude FOLDER...` rule in
# /etc/dpkg/dpkg.cfg.d/* (each file kept as FILE.BACKUP first), saying so with WHAT
# ("locale exclusions", "man-page exclusions").
allow_dpkg_path() {
  local name=$1 folder=$2 backup=$3 what=$4 cfg
  for cfg in /etc/dpkg/dpkg.cfg.d/*; do
    [[ -f $cfg ]] || continue
    if grep -Eq "^[[:space:]]*path-exclude[[:space:]=]+${folder}" "$cfg"; then
      cp -p "$cfg" "$cfg.$backup"
      sed -i -E "s|^([[:space:]]*path-exclude[[:space:]=]+${folder}.*)\$|# disabled by mt5study ${name}: \\1|" "$cfg"
      echo "$name: disabled $what in $cfg (backup $cfg.$backup)"
    fi
  done
}

# reinstall_dropped NAME PATTERN WHAT PKG...: reinstall the packages whose first file matching
# PATTERN (grep -E on `dpkg -L`) is missing on disk: installed while a path-exclude rule was active.
reinstall_dropped() {
  local name=$1 pattern=$2 what=$3 p first
  shift 3
  local missing=()
  for p in "$@"; do
    first=$(dpkg -L "$p" 2>/dev/null | grep -E "$pattern" | head -n 1 || true)
    if [[ -n $first && ! -e $first ]]; then missing+=("$p"); fi
  done
  if (( ${#missing[@]} )); then
    echo "$name: reinstalling ($what were excluded before): ${missing[*]}"
    apt-get install -y --reinstall --no-install-recommends "${missing[@]}"
  fi
}
