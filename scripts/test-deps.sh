#!/usr/bin/env bash
# Installs the Debian packages the tests need when they are missing: PostgreSQL server binaries,
# podman with runc, bindfs (FUSE), and debootstrap (the deploy tests' Debian root). As root it runs apt-get; otherwise it prints the command.
set -euo pipefail

missing=()
have_pg() {
	command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
	compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
have_pg || missing+=(postgresql)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v bindfs >/dev/null 2>&1 || missing+=(bindfs)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v fusermount3 >/dev/null 2>&1 || command -v fusermount >/dev/null 2>&1 || missing+=(fuse3)
[ ${#missing[@]} -eq 0 ] && exit 0

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
	echo "The tests need: ${missing[*]}. Install them as root with:" >&2
	echo "  sudo sh -c '$cmd'" >&2
	exit 1
fi
echo "installing test dependencies: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
