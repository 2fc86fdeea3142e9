#!/bin/sh
# Installs the Debian 12 packages that building and testing acr-gateway
# need, skipping the ones already there. Sourced by tests/run.sh and
# deploy/local/run.sh; needs root (or sudo) only when something is missing.
set -eu

ACRGW_PACKAGES="build-essential cmake pkg-config libevent-dev libssl-dev
libjansson-dev libhiredis-dev libcmocka-dev redis-server openssl curl
python3 ca-certificates clang libclang-rt-14-dev"

acrgw_install_deps() {
	missing=""
	for pkg in $ACRGW_PACKAGES; do
		if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null |
		    grep -q "install ok installed"; then
			missing="$missing $pkg"
		fi
	done
	[ -z "$missing" ] && return 0

	echo "installing:$missing" >&2
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo="sudo"
	$sudo apt-get update -qq
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
	    --no-install-recommends $missing >/dev/null
}
