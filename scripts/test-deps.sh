#!/usr/bin/env bash
# Installs the Debian packages the tests need when they are missing: PostgreSQL server binaries,
# podman with runc, bindfs (FUSE), debootstrap (the deploy tests' Debian root), python3-aiosmtpd
# (a real SMTP server for the notification tests, run with Debian's /usr/bin/python3), and chromium
# with node and npm for the status page's browser test. As root it runs apt-get; otherwise it
# prints the command. Then it installs playwright-core (pinned) from npm into ADI_NODE_DIR
# (default: the user's cache folder, outside the repository).
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
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || missing+=(python3-aiosmtpd)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

# playwright-core drives the system chromium (executablePath); it downloads no browser.
PLAYWRIGHT_VERSION=1.65.2
node_dir=${ADI_NODE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/omero-adi/node}
install_playwright() {
	local have
	have=$(node -p "require('$node_dir/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
	[ "$have" = "$PLAYWRIGHT_VERSION" ] && return 0
	echo "installing playwright-core $PLAYWRIGHT_VERSION into $node_dir"
	mkdir -p "$node_dir"
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$node_dir" --no-audit --no-fund --silent \
		"playwright-core@$PLAYWRIGHT_VERSION" >/dev/null
}
if [ ${#missing[@]} -eq 0 ]; then
	install_playwright
	exit 0
fi

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
	echo "The tests need: ${missing[*]}. Install them as root with:" >&2
	echo "  sudo sh -c '$cmd'" >&2
	exit 1
fi
echo "installing test dependencies: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
install_playwright
