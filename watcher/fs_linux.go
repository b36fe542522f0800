package watcher

import (
	"bytes"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// nameOff is the offset of the name in a linux_dirent64 record.
const nameOff = int(unsafe.Offsetof(unix.Dirent{}.Name))

// dirReader lists directories with getdents64 into one reused buffer: no allocation per entry.
type dirReader struct {
	buf []byte
}

func newDirReader() *dirReader { return &dirReader{buf: make([]byte, 64<<10)} }

// openDir opens a directory for listing (never following a symlink when nofollow is set).
func openDir(path string, nofollow bool) (int, error) {
	flags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC | unix.O_NONBLOCK
	if nofollow {
		flags |= unix.O_NOFOLLOW
	}
	for {
		fd, err := unix.Open(path, flags, 0)
		if err == unix.EINTR {
			continue
		}
		return fd, err
	}
}

// each calls fn for every entry of the open directory fd except "." and "..". name is only valid
// during the call and is followed by a NUL byte in memory (namePtr may be passed to a syscall).
// typ is the dirent type (unix.DT_*; DT_UNKNOWN on filesystems that do not report it).
func (d *dirReader) each(fd int, fn func(name []byte, namePtr *byte, typ uint8) error) error {
	for {
		n, err := unix.Getdents(fd, d.buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("list directory: %w", err)
		}
		if n <= 0 {
			return nil
		}
		for off := 0; off < n; {
			reclen := int(*(*uint16)(unsafe.Pointer(&d.buf[off+16])))
			if reclen == 0 || off+reclen > n {
				return fmt.Errorf("list directory: bad dirent record length %d", reclen)
			}
			typ := d.buf[off+18]
			rec := d.buf[off+nameOff : off+reclen]
			l := bytes.IndexByte(rec, 0)
			if l < 0 {
				l = len(rec)
			}
			name := rec[:l:l]
			off += reclen
			if l == 0 || (l == 1 && name[0] == '.') || (l == 2 && name[0] == '.' && name[1] == '.') {
				continue
			}
			if err := fn(name, &rec[0], typ); err != nil {
				return err
			}
		}
	}
}

// bstr views b as a string without copying; the string must not outlive b's contents.
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// mtimeOf is a stat's modification time in nanoseconds since the epoch.
func mtimeOf(s *unix.Stat_t) int64 { return s.Mtim.Sec*1e9 + s.Mtim.Nsec }
