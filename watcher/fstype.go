package watcher

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Filesystem magic numbers (statfs f_type) of mounts that deliver no inotify events for changes
// made by other hosts.
var networkFS = map[uint32]string{
	0x6969:     "nfs",
	0x517B:     "smb",
	0xFF534D42: "cifs",
	0xFE534D42: "smb2",
	0x65735546: "fuse",
}

// fsMode decides events or poll for a folder from its filesystem type. reason says why.
func fsMode(path string) (mode, reason string, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "", "", fmt.Errorf("statfs %s: %w", path, err)
	}
	t := uint32(st.Type)
	if name, ok := networkFS[t]; ok {
		return ModePoll, fmt.Sprintf("%s filesystem (statfs type 0x%X): no events for remote writes", name, t), nil
	}
	return ModeEvents, fmt.Sprintf("local filesystem (statfs type 0x%X)", t), nil
}
