#!/bin/sh
# Installs omero-adi as a systemd service on a plain host: run as root from the repository root,
#   examples/install.sh [BINARY]        (BINARY defaults to bin/omero-adi, see `make build`)
# It creates the system user omero-adi with subordinate uid/gid ranges (rootless podman runs the
# preprocessing containers as that user), its folders, /usr/local/bin/omero-adi, the unit
# examples/omero-adi.service as shipped, and /etc/omero-adi/settings.toml and /etc/omero-adi/env
# (mode 0600) when they are missing. It never uses the network and can be run again: it changes
# only what is missing or older (the binary and the unit are replaced, settings and env are kept).
set -eu

binary=${1:-bin/omero-adi}
user=omero-adi
home=/var/lib/omero-adi
# 65536 ids: a whole user namespace's worth, as useradd gives login users (SUB_UID_COUNT).
subids=65536

die() { echo "install.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root"
[ -f examples/omero-adi.service ] && [ -f examples/production.toml ] ||
	die "run from the repository root (examples/omero-adi.service not found in $(pwd))"
[ -x "$binary" ] || die "$binary is not an executable: run make build, or give the binary's path"
for p in useradd usermod getent install; do
	command -v "$p" >/dev/null 2>&1 || die "$p not found (Debian: apt-get install passwd coreutils)"
done

if ! getent passwd "$user" >/dev/null; then
	useradd --system --user-group --home-dir "$home" --create-home --shell /usr/sbin/nologin \
		--comment "omero-adi import agent" "$user"
	echo "created system user $user"
fi

# next_free FILE prints the first id after every range in FILE (at least 100000, where login
# users' ranges start), so a new range overlaps none.
next_free() {
	[ -f "$1" ] || { echo 100000; return; }
	awk -F: 'BEGIN { n = 100000 } NF >= 3 && $2 + $3 > n { n = $2 + $3 } END { print n }' "$1"
}

# useradd --system gives no subordinate ids; without them podman maps one uid only, and images
# with files of several owners fail to unpack.
if ! grep -q "^$user:" /etc/subuid 2>/dev/null; then
	start=$(next_free /etc/subuid)
	usermod --add-subuids "$start-$((start + subids - 1))" "$user"
	echo "gave $user subordinate uids $start-$((start + subids - 1))"
fi
if ! grep -q "^$user:" /etc/subgid 2>/dev/null; then
	start=$(next_free /etc/subgid)
	usermod --add-subgids "$start-$((start + subids - 1))" "$user"
	echo "gave $user subordinate gids $start-$((start + subids - 1))"
fi

install -d -m 0750 -o "$user" -g "$user" "$home" /var/log/omero-adi
install -d -m 0750 -o root -g "$user" /etc/omero-adi /etc/omero-adi/rules.d
install -m 0755 "$binary" /usr/local/bin/omero-adi
install -m 0644 examples/omero-adi.service /etc/systemd/system/omero-adi.service

if [ ! -e /etc/omero-adi/settings.toml ]; then
	install -m 0640 -o root -g "$user" examples/production.toml /etc/omero-adi/settings.toml
	echo "wrote /etc/omero-adi/settings.toml (from examples/production.toml): edit it"
fi
if [ ! -e /etc/omero-adi/env ]; then
	umask 077
	cat >/etc/omero-adi/env <<-'EOF'
		# Secrets of the omero-adi service (read by systemd, mode 0600): never in settings or argv.
		#INGEST_TRACKING_DB_URL=postgresql://adi:SECRET@db.example.org/biomero
		#OMERO_PASSWORD=SECRET
	EOF
	chmod 0600 /etc/omero-adi/env
	echo "wrote /etc/omero-adi/env: set the secrets there"
fi

# The service user's podman settings, when it has none: the agent keeps each container's output
# in log_dir (preprocessing.<uuid>.log), so podman keeps it in a file too instead of sending the
# container's stderr to the journal as errors; and podman manages the containers' cgroups itself
# in the cgroup the unit delegates (Delegate=yes): a system service has no systemd user session
# whose bus podman's systemd cgroup manager needs (that is what lingering would start).
conf="$home/.config/containers/containers.conf"
if [ ! -e "$conf" ]; then
	install -d -m 0700 -o "$user" -g "$user" "$home/.config" "$home/.config/containers"
	cat >"$conf" <<-'EOF'
		# podman settings of the omero-adi service user (written by examples/install.sh)
		[containers]
		log_driver = "k8s-file"

		[engine]
		cgroup_manager = "cgroupfs"
	EOF
	chown "$user:$user" "$conf"
	echo "wrote $conf"
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

echo "installed /usr/local/bin/omero-adi and /etc/systemd/system/omero-adi.service; next:"
echo "  edit /etc/omero-adi/settings.toml and /etc/omero-adi/env, then: systemctl enable --now omero-adi"
echo "  check the host as the service sees it: systemd-run --pipe --wait --uid=$user \\"
echo "    -p EnvironmentFile=/etc/omero-adi/env -p Environment=XDG_RUNTIME_DIR=/run/omero-adi /usr/local/bin/omero-adi doctor"
