#!/usr/bin/env bash
# Install the packages whose gettext catalogs (/usr/share/locale/<lang>/LC_MESSAGES/*.mo) the
# translation study reads as parallel text (mt5study.translation.catalogs): GTK 3 and 2, GLib,
# gdk-pixbuf, AT-SPI, shared-mime-info, xdg-user-dirs, GSettings schemas, the ISO code lists,
# and the GNU tools. On Debian the translations ship inside each package (no language packs).
#
# Run as root on Debian or Ubuntu:   sudo bash scripts/install_catalogs.sh
# Options (environment):
#   CATALOG_PACKAGES="libgtk-3-common iso-codes"   only these packages (default: the list below)
#
# Docker images of Debian/Ubuntu may carry dpkg rules `path-exclude /usr/share/locale/*`: dpkg
# then drops every catalog silently. This script disables such rules (keeping a backup) and
# reinstalls packages whose catalogs were dropped by them earlier.
set -euo pipefail

# shellcheck source=scripts/install_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/install_common.sh"
require_root_apt install_catalogs.sh

# 1. Let dpkg install files under /usr/share/locale again (comment out, keep a backup).
allow_dpkg_path install_catalogs.sh /usr/share/locale mt5study-catalogs.bak "locale exclusions"

apt-get update -qq

# 2. The packages (names differ between releases: those apt does not know are skipped).
default=(libgtk-3-common libgtk2.0-common libglib2.0-data libgdk-pixbuf2.0-common at-spi2-common
         shared-mime-info xdg-user-dirs gsettings-desktop-schemas iso-codes coreutils grep sed tar
         findutils diffutils gettext apt dpkg libpam-runtime wget gpg)
read -r -a candidates <<< "${CATALOG_PACKAGES:-${default[*]}}"
pkgs=()
for p in "${candidates[@]}"; do
  if apt-cache show "$p" >/dev/null 2>&1; then
    pkgs+=("$p")
  else
    echo "install_catalogs.sh: no package $p here, skipped" >&2
  fi
done
echo "install_catalogs.sh: installing ${pkgs[*]}"
apt-get install -y --no-install-recommends "${pkgs[@]}"

# 3. Packages installed while the exclusion was active have no catalogs on disk: reinstall them.
reinstall_dropped install_catalogs.sh '^/usr/share/locale/.+\.mo$' catalogs "${pkgs[@]}"

dpkg-query -W -f='${Package}\t${Version}\n' "${pkgs[@]}"
echo "install_catalogs.sh: $(find /usr/share/locale -name '*.mo' | wc -l) catalogs under /usr/share/locale"
