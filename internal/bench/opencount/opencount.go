// Package opencount counts the files opened under a tree, by any process, with inotify IN_OPEN
// watches on every folder of it: the watcher's tests and benchmarks check with it that no data
// file is read before its unit settles.
package opencount

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Counter counts opens of files (not folders, which are opened to be listed) in the folders it
// watches. Folders created after Start are not watched.
type Counter struct {
	fd   int
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	opens     map[string]int // file path -> opens
	overflows int
	dirs      map[int32]string // watch descriptor -> folder
}

// Start watches every folder under root and counts from the moment it returns (the opens of its
// own walk are not counted).
func Start(root string) (*Counter, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("count opens: %w", err)
	}
	c := &Counter{fd: fd, stop: make(chan struct{}), done: make(chan struct{}), opens: map[string]int{}, dirs: map[int32]string{}}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		wd, err := unix.InotifyAddWatch(fd, p, unix.IN_OPEN|unix.IN_ONLYDIR)
		if err != nil {
			return fmt.Errorf("count opens: watch %s: %w", p, err)
		}
		c.mu.Lock()
		c.dirs[int32(wd)] = p
		c.mu.Unlock()
		return nil
	})
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	// The walk above opened every folder: read those events away before counting.
	go c.read()
	time.Sleep(50 * time.Millisecond)
	c.Reset()
	return c, nil
}

func (c *Counter) read() {
	defer close(c.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(c.fd, buf)
		if err != nil || n <= 0 {
			select {
			case <-c.stop:
				return
			case <-time.After(time.Millisecond):
			}
			continue
		}
		c.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			for len(name) > 0 && name[len(name)-1] == 0 {
				name = name[:len(name)-1]
			}
			switch {
			case ev.Mask&unix.IN_Q_OVERFLOW != 0:
				c.overflows++
			case ev.Mask&unix.IN_OPEN != 0 && ev.Mask&unix.IN_ISDIR == 0 && len(name) > 0:
				c.opens[filepath.Join(c.dirs[ev.Wd], string(name))]++
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
		c.mu.Unlock()
	}
}

// Settle waits until the events of what happened so far have been read.
func (c *Counter) Settle() { time.Sleep(50 * time.Millisecond) }

// Opens returns the files opened since Start or Reset, with how often. It fails when the inotify
// queue overflowed: the count would be a lower bound.
func (c *Counter) Opens() (map[string]int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.overflows > 0 {
		return nil, fmt.Errorf("count opens: the inotify queue overflowed (%d files counted)", len(c.opens))
	}
	out := make(map[string]int, len(c.opens))
	for p, n := range c.opens {
		out[p] = n
	}
	return out, nil
}

// Reset starts counting again from zero.
func (c *Counter) Reset() {
	c.mu.Lock()
	c.opens = map[string]int{}
	c.overflows = 0
	c.mu.Unlock()
}

// Close stops counting and releases the inotify instance.
func (c *Counter) Close() {
	close(c.stop)
	<-c.done
	unix.Close(c.fd)
}
