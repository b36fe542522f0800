package preprocess

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner/child"
)

// Check is one finding of Doctor: Err is nil when the check passed; Fix says what to do otherwise.
type Check struct {
	Name string
	Err  error
	Fix  string
}

// doctorTimeout bounds each runtime call of Doctor (a first `podman info` sets up the storage).
const doctorTimeout = 2 * time.Minute

// unitFix is what to do when no-new-privileges is set for the agent.
const unitFix = "remove NoNewPrivileges=yes from the agent's systemd unit, and the options that imply it " +
	"(SystemCallFilter=, RestrictSUIDSGID=, …; examples/omero-adi.service says which it keeps), or in a container " +
	"drop --security-opt no-new-privileges: rootless podman's setuid newuidmap cannot work under it"

// Doctor checks that the container runtime can run the given images for the user that runs this
// process. For a user other than root (rootless podman) it checks the user's subordinate uid and
// gid ranges (/etc/subuid, /etc/subgid), that no-new-privileges is not set (/proc/self/status
// NoNewPrivs: the setuid newuidmap and newgidmap would not work) and that those helpers are
// there; for everyone that `podman info` works and its storage is writable, and that each image
// is in the user's storage and a container of it can be created and initialised (user
// namespace, storage mount, runtime: all that a run does up to starting the image's program),
// with Config.ExtraArgs. Each failure says what to do. It removes the containers it created.
func (r *Runner) Doctor(ctx context.Context, images []string) []Check {
	var out []Check
	check := func(name string, err error, fix string) { out = append(out, Check{Name: name, Err: err, Fix: fix}) }
	rt := r.cfg.Runtime
	if _, err := exec.LookPath(rt); err != nil {
		check("container runtime "+rt, err, "apt-get install podman runc uidmap, or map images to local commands in [preprocessing.local]")
		return out
	}
	who := "root"
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			check("user of the agent", err, "run the agent as a user with an entry in /etc/passwd")
			return out
		}
		who = u.Username
		out = append(out, rootlessChecks(u, "/proc/self/status")...)
	}
	root, err := r.probe(ctx, "info", "--format", "{{.Store.GraphRoot}}")
	check(fmt.Sprintf("%s info as %s", rt, who), err, fixFor(err, fmt.Sprintf("run `%s info` as %s to see the whole message", rt, who)))
	if err != nil {
		return out
	}
	root = strings.TrimSpace(root)
	check(fmt.Sprintf("%s storage %s", rt, root), probeWrite(root),
		fmt.Sprintf("give %s write access to its container storage, or set graphroot in ~/.config/containers/storage.conf", who))
	seen := map[string]bool{}
	sort.Strings(images)
	for _, image := range images {
		if seen[image] {
			continue
		}
		seen[image] = true
		err := r.tryImage(ctx, image)
		check(fmt.Sprintf("container of %s as %s", image, who), err,
			fixFor(err, fmt.Sprintf("run `%s run --rm %s` as %s to see the cause", rt, image, who)))
	}
	return out
}

// rootlessChecks are the checks only rootless podman needs, for user u; status is the
// /proc/PID/status file of the process.
func rootlessChecks(u *user.User, status string) []Check {
	var out []Check
	for _, f := range []struct{ file, flag string }{{"/etc/subuid", "--add-subuids"}, {"/etc/subgid", "--add-subgids"}} {
		n, err := subIDs(f.file, u.Username, u.Uid)
		if err == nil && n == 0 {
			err = fmt.Errorf("no range for %s in %s: podman maps only its own id, and images with files of other owners fail", u.Username, f.file)
		}
		out = append(out, Check{Name: fmt.Sprintf("subordinate ids of %s in %s", u.Username, f.file), Err: err,
			Fix: fmt.Sprintf("usermod %s 100000-165535 %s with a range no other line of %s overlaps (examples/install.sh picks one)", f.flag, u.Username, f.file)})
	}
	b, err := os.ReadFile(status)
	if err == nil && noNewPrivs(string(b)) {
		err = errors.New("no-new-privileges is set for the agent")
	}
	out = append(out, Check{Name: "newuidmap usable (no no-new-privileges)", Err: err, Fix: unitFix})
	for _, helper := range []string{"newuidmap", "newgidmap"} {
		out = append(out, Check{Name: helper, Err: privileged(helper),
			Fix: "apt-get install uidmap (it installs the helper setuid root)"})
	}
	return out
}

// subIDs returns how many subordinate ids FILE gives the user (by name or uid).
func subIDs(file, name, uid string) (int, error) {
	f, err := os.Open(file)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(parts) != 3 || (parts[0] != name && parts[0] != uid) {
			continue
		}
		if c, err := strconv.Atoi(parts[2]); err == nil && c > 0 {
			n += c
		}
	}
	return n, sc.Err()
}

// noNewPrivs reports whether a /proc/PID/status text has the no_new_privs bit set.
func noNewPrivs(status string) bool {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "NoNewPrivs:"); ok {
			return strings.TrimSpace(v) == "1"
		}
	}
	return false
}

// privileged checks that program is on PATH and setuid root or has file capabilities.
func privileged(program string) error {
	p, err := exec.LookPath(program)
	if err != nil {
		return err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode()&os.ModeSetuid != 0 && st.Uid == 0 {
		return nil
	}
	if n, err := syscall.Getxattr(p, "security.capability", nil); err == nil && n > 0 {
		return nil
	}
	return fmt.Errorf("%s is neither setuid root nor has file capabilities", p)
}

// tryImage creates a container of image (never pulling), initialises it and removes it.
func (r *Runner) tryImage(ctx context.Context, image string) error {
	if _, err := r.probe(ctx, "image", "exists", image); err != nil {
		return fmt.Errorf("not in this user's container storage: %w", err)
	}
	name := "omero-adi-doctor-" + uuid.NewString()[:8]
	args := append(append([]string{"create", "--pull=never", "--name", name}, r.cfg.ExtraArgs...), image)
	if r.cfg.UsernsMode != "" {
		args = append([]string{"create", "--userns=" + r.cfg.UsernsMode}, args[1:]...)
	}
	if _, err := r.probe(ctx, args...); err != nil {
		return err
	}
	defer func() { _, _ = r.probe(context.WithoutCancel(ctx), "rm", "--force", "--ignore", name) }()
	_, err := r.probe(ctx, "init", name)
	return err
}

// probe runs the runtime with args and returns its stdout; a failure carries its stderr's end.
func (r *Runner) probe(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, doctorTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.cfg.Runtime, args...)
	cmd.Env = child.Env(os.Environ(), child.Names(podmanEnv...), r.cfg.Env) // as the containers' runs get
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return "", fmt.Errorf("%s %s: %w", filepath.Base(r.cfg.Runtime), args[0], err)
		}
		return "", fmt.Errorf("%s %s: %w: %s", filepath.Base(r.cfg.Runtime), args[0], err, strconv.Quote(order.Clip(msg, 600)))
	}
	return stdout.String(), nil
}

// fixFor names the fix of a runtime failure that says its cause, else gives fallback.
func fixFor(err error, fallback string) string {
	if err == nil {
		return fallback
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "newuidmap") || strings.Contains(msg, "newgidmap"):
		return unitFix + "; and check the ranges in /etc/subuid and /etc/subgid"
	case strings.Contains(msg, "/dev/fuse"):
		return "give the container /dev/fuse (podman run --device /dev/fuse, mode 0666 on the host as udev makes it) for fuse-overlayfs"
	case strings.Contains(msg, "not in this user's container storage"):
		return "load or pull the image as the agent's user (podman pull IMAGE, podman load -i FILE)"
	}
	return fallback
}

// probeWrite creates and removes a file in dir.
func probeWrite(dir string) error {
	f, err := os.CreateTemp(dir, ".omero-adi-doctor-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}
