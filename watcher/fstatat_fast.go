//go:build linux && (amd64 || arm64)

package watcher

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// fstatat stats a NUL-terminated name relative to dirfd without following symlinks and without
// converting the name to a Go string (the scan of an unchanged tree stats every file).
func fstatat(dirfd int, name []byte, namePtr *byte, st *unix.Stat_t) error {
	_, _, e := unix.Syscall6(unix.SYS_NEWFSTATAT, uintptr(dirfd), uintptr(unsafe.Pointer(namePtr)),
		uintptr(unsafe.Pointer(st)), unix.AT_SYMLINK_NOFOLLOW, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
