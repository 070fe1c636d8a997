#!/usr/bin/env bash
# Install the translated Linux manual pages that the `manpages` ETL source reads
# (mt5study.data.sources.ManpagesReader): English `manpages` plus every `manpages-XX`
# user-page package the distribution has, and groff to render them.
#
# Run as root on Debian or Ubuntu:   sudo bash scripts/install_manpages.sh
# Options (environment):
#   MANPAGES_LANGS="de fr ja"   only these languages (default: all found by apt-cache)
#   MANPAGES_DEV=1              also the -dev packages (sections 2/3: more text, more C)
#
# Docker images of Debian/Ubuntu often carry /etc/dpkg/dpkg.cfg.d/excludes (or docker's
# "minimize" files) with `path-exclude /usr/share/man/*`: dpkg then silently drops every page.
# This script disables such rules for /usr/share/man, and reinstalls packages whose pages
# were dropped by them earlier. Ubuntu's minimized images also divert /usr/bin/man to a stub.
set -euo pipefail

# shellcheck source=scripts/install_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/install_common.sh"
require_root_apt install_manpages.sh

# 1. Let dpkg install files under /usr/share/man again (comment out, keep a backup).
allow_dpkg_path install_manpages.sh /usr/share/man mt5study.bak "man-page exclusions"
# Ubuntu minimized images: /usr/bin/man is diverted to a script that says "minimized".
if command -v dpkg-divert >/dev/null && dpkg-divert --list /usr/bin/man 2>/dev/null | grep -q .; then
  rm -f /usr/bin/man
  dpkg-divert --quiet --remove --rename /usr/bin/man || true
fi

apt-get update -qq

# 2. Which packages exist here (names differ between releases).
if [[ -n ${MANPAGES_LANGS:-} ]]; then
  candidates=(manpages)
  for l in $MANPAGES_LANGS; do candidates+=("manpages-$l"); done
else
  mapfile -t candidates < <(apt-cache search --names-only '^manpages(-[a-z][a-z](-[a-z][a-z])?)?$' | awk '{print $1}' | sort -u)
fi
pkgs=()
for p in "${candidates[@]}"; do
  case $p in manpages-dev|manpages-posix*|manpages-pt) continue ;; esac  # not a language / dummy
  if apt-cache show "$p" >/dev/null 2>&1; then
    pkgs+=("$p")
    if [[ ${MANPAGES_DEV:-0} == 1 ]] && apt-cache show "$p-dev" >/dev/null 2>&1; then pkgs+=("$p-dev"); fi
  else
    echo "install_manpages.sh: no package $p here, skipped" >&2
  fi
done
tools=(groff-base man-db)  # groff renders the pages (the ETL); man for reading them by hand

echo "install_manpages.sh: installing ${pkgs[*]} ${tools[*]}"
apt-get install -y --no-install-recommends "${tools[@]}" "${pkgs[@]}"

# 3. Packages installed while the exclusion was active have no pages on disk: reinstall them.
reinstall_dropped install_manpages.sh '^/usr/share/man/.+\.gz$' pages "${pkgs[@]}"

dpkg-query -W -f='${Package}\t${Version}\n' "${pkgs[@]}"
echo "install_manpages.sh: done"
