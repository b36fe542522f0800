//go:build linux && !amd64 && !arm64

package watcher

import "golang.org/x/sys/unix"

// fstatat stats name relative to dirfd without following symlinks.
func fstatat(dirfd int, name []byte, _ *byte, st *unix.Stat_t) error {
	return unix.Fstatat(dirfd, string(name), st, unix.AT_SYMLINK_NOFOLLOW)
}
