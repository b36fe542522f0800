package deploy

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/internal/convtest"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/omerotest/world"
)

// machine is a podman container of the bookworm root; exec runs argv in it as root.
type machine struct {
	t    testing.TB
	name string
}

func (m *machine) exec(argv ...string) string {
	m.t.Helper()
	return run(m.t, nil, append([]string{"podman", "exec", m.name}, argv...)...)
}

// as runs argv as user in the machine (its HOME; the runtime folder the service gets).
func (m *machine) as(user string, argv ...string) string {
	m.t.Helper()
	return m.exec(append([]string{"runuser", "-u", user, "--", "env", "HOME=/var/lib/omero-adi",
		"XDG_RUNTIME_DIR=/run/omero-adi"}, argv...)...)
}

func (m *machine) write(path, mode, owner, text string) {
	m.t.Helper()
	run(m.t, []byte(text), "podman", "exec", "-i", m.name, "sh", "-c",
		`cat >"$1" && chmod "$2" "$1" && chown "$3" "$1"`, "sh", path, mode, owner)
}

func randomName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// boot starts the bookworm root with systemd as PID 1 and waits until it is up. The private
// cgroup namespace lets rootless podman inside mount its cgroups on these cgroup v1 hosts; runc and
// the ulimits are what the sandbox allows (as convtest.PodmanArgs).
func boot(t testing.TB, image string, mounts ...string) *machine {
	t.Helper()
	m := &machine{t: t, name: randomName("adi-deploy-")}
	argv := []string{"podman", "run", "-d", "--name", m.name, "--systemd=always", "--privileged", "--cgroupns=private",
		"--runtime", "runc", "--network=none", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"}
	for _, v := range mounts {
		argv = append(argv, "-v", v)
	}
	run(t, nil, append(argv, image, "/sbin/init")...)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := tryRun(nil, "podman", "exec", m.name, "journalctl", "--no-pager", "-n", "150")
			t.Logf("end of the machine's journal:\n%s", out)
		}
		_, _ = tryRun(nil, "podman", "rm", "-f", "-v", "-t", "5", m.name)
	})
	// is-system-running --wait fails while systemd's bus is not there yet, and for "degraded".
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := tryRun(nil, "podman", "exec", m.name, "systemctl", "is-system-running", "--wait")
		if err == nil {
			return m
		}
		if strings.TrimSpace(out) != "" || time.Now().After(deadline) {
			failed, _ := tryRun(nil, "podman", "exec", m.name, "systemctl", "--failed", "--no-legend")
			t.Fatalf("systemd did not come up: %s %v\nfailed units: %s", out, err, failed)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// doubleServer is a socket unit that accepts connections on the double's port, as OMERO.server
// would: the double and the agent's probe only check that the port answers.
const doubleServer = `[Unit]
Description=the OMERO server port of the omero CLI double

[Socket]
ListenStream=127.0.0.1:4064
Accept=yes

[Install]
WantedBy=sockets.target
`

const doubleAccept = `[Unit]
Description=a connection to the omero CLI double's server

[Service]
ExecStart=/bin/true
StandardInput=socket
`

// agentSettings are the settings of an installed agent: SQLite, the double as the omero CLI
// (its server at port, its state and ManagedRepository at the paths given), podman preprocessing
// with the test converter.
func agentSettings(cli string, port int, state, repo string) string {
	var extra []string
	for _, a := range convtest.PodmanArgs() {
		extra = append(extra, strconv.Quote(a))
	}
	return fmt.Sprintf(`ingest_tracking_db = "sqlite:////var/lib/omero-adi/adi.db"
base_dir = "/data"
log_dir = "/var/log/omero-adi"
log_format = "json"
listen = "127.0.0.1:9464"
poll_interval = "200ms"
shutdown_timeout = "10s"

[omero]
cli = %q
host = "localhost"
port = %d
managed_repository = %q
local_tmp_root = "/var/lib/omero-adi/inplace"
session_dir = "/var/lib/omero-adi/sessions"
env = ["OMERO_DOUBLE_STATE=%s", "OMERO_DOUBLE_MANAGED_REPO=%s"]

[preprocessing]
runtime = "podman"
extra_args = [%s]
timeout = "2m"

[groups.Demo]
roots = ["/data/demo"]
`, cli, port, repo, state, repo, strings.Join(extra, ", "))
}

// The shipped unit, installed by examples/install.sh on a booted Debian root, runs a plain and a
// preprocessing order to 'Import Completed' (the preprocessing one through rootless podman as the
// service user), stops cleanly, and the journal has no error.
func TestSystemdService(t *testing.T) {
	image := bookwormImage(t)
	bin := binaries(t)
	stage := t.TempDir()
	if err := os.Chmod(stage, 0o755); err != nil {
		t.Fatal(err)
	}
	st := omerotest.DefaultState()
	st.Server.Port = 4064
	if err := world.Save(filepath.Join(stage, "state.json"), st); err != nil {
		t.Fatal(err)
	}
	m := boot(t, image, repoRoot(t)+":/src:ro", bin+":/stage:ro", stage+":/double:ro")

	start := time.Now()
	m.exec("sh", "-c", "cd /src && examples/install.sh /stage/omero-adi")
	// A second run changes nothing and fails on nothing.
	again := m.exec("sh", "-c", "cd /src && examples/install.sh /stage/omero-adi")
	if strings.Contains(again, "created") || strings.Contains(again, "gave") || strings.Contains(again, "wrote") {
		t.Errorf("install.sh run again changed things:\n%s", again)
	}
	if sub := m.exec("grep", "-c", "^omero-adi:", "/etc/subuid", "/etc/subgid"); strings.Count(sub, ":1") != 2 {
		t.Errorf("subordinate id ranges of omero-adi: %q", sub)
	}
	if mode := m.exec("stat", "-c", "%a %U", "/etc/omero-adi/env"); strings.TrimSpace(mode) != "600 root" {
		t.Errorf("/etc/omero-adi/env is %q, want 600 root", mode)
	}
	shipped, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "omero-adi.service"))
	if err != nil {
		t.Fatal(err)
	}
	if unit := m.exec("cat", "/etc/systemd/system/omero-adi.service"); unit != string(shipped) {
		t.Error("the installed unit differs from examples/omero-adi.service")
	}
	if dropins := m.exec("sh", "-c", "ls /etc/systemd/system/omero-adi.service.d 2>/dev/null || true"); dropins != "" {
		t.Errorf("drop-ins: %s", dropins)
	}

	// The test's own parts: the double as the omero CLI with its server port, its state, data.
	m.exec("cp", "/stage/omero", "/usr/local/bin/omero")
	m.write("/etc/systemd/system/omero-double.socket", "644", "root", doubleServer)
	m.write("/etc/systemd/system/omero-double@.service", "644", "root", doubleAccept)
	m.exec("systemctl", "daemon-reload")
	m.exec("systemctl", "start", "omero-double.socket")
	m.exec("install", "-d", "-o", "omero-adi", "-g", "omero-adi", "/var/lib/omero-adi/double", "/OMERO",
		"/OMERO/ManagedRepository", "/data", "/data/demo", "/data/demo/alice")
	m.exec("cp", "/double/state.json", "/var/lib/omero-adi/double/state.json")
	m.exec("chown", "omero-adi:", "/var/lib/omero-adi/double/state.json")
	m.write("/data/demo/alice/plain.txt", "644", "omero-adi", "plain\n")
	m.write("/data/demo/alice/raw.tif", "644", "omero-adi", "raw\n")
	m.write("/etc/omero-adi/settings.toml", "640", "root:omero-adi",
		agentSettings("/usr/local/bin/omero", 4064, "/var/lib/omero-adi/double/state.json", "/OMERO/ManagedRepository"))
	m.write("/etc/omero-adi/env", "600", "root", "OMERO_PASSWORD=omero\n")

	// The converter image in the service user's own (rootless) storage, loaded with the runtime
	// folder the unit gives the service, which podman records in its storage.
	m.exec("install", "-d", "-m", "0700", "-o", "omero-adi", "-g", "omero-adi", "/run/omero-adi")
	m.as("omero-adi", "podman", "load", "--quiet", "-i", "/stage/converter.tar")
	// Without its pause process (which holds the user namespace podman made here, outside the
	// unit), the service's podman must map a user namespace of its own, under the unit's settings.
	m.as("omero-adi", "podman", "system", "migrate")
	m.exec("rm", "-rf", "/run/omero-adi")
	if left := m.exec("sh", "-c", `for p in /proc/[0-9]*; do [ "$(stat -c %U "$p")" = omero-adi ] && cat "$p/comm"; done; true`); left != "" {
		t.Fatalf("processes of omero-adi left before the service starts: %s", left)
	}
	conv := convtest.Image(t)

	cli := []string{"/usr/local/bin/omero-adi", "--config", "/etc/omero-adi/settings.toml"}
	create := append(append([]string{}, cli...), "orders", "create", "--group", "Demo", "--user", "alice", "--dataset", "151")
	plain := strings.TrimSpace(m.as("omero-adi", append(create, "/data/demo/alice/plain.txt")...))
	pre := strings.TrimSpace(m.as("omero-adi", append(create, "--container", conv, "/data/demo/alice/raw.tif")...))

	m.exec("systemctl", "start", "omero-adi")
	for _, u := range []string{plain, pre} {
		o := waitOrder(t, func(argv ...string) string { return m.as("omero-adi", argv...) }, cli, u, 2*time.Minute)
		if o.Stage != "Import Completed" {
			t.Errorf("order %s ended %q: %s", u, o.Stage, o.Description)
		}
	}
	// doctor as the service runs (its user, environment and runtime folder) passes, and under
	// NoNewPrivileges=yes it names the unit option to remove.
	m.as("omero-adi", "omero", "import", "--fetch-jars", "5.6.14") // README: the importer jars, as the agent's user
	doctor := []string{"systemd-run", "--quiet", "--wait", "--pipe", "--uid=omero-adi", "--gid=omero-adi",
		"-p", "EnvironmentFile=/etc/omero-adi/env", "-p", "Environment=HOME=/var/lib/omero-adi XDG_RUNTIME_DIR=/run/omero-adi"}
	doctorCmd := append(append([]string{}, cli...), "doctor")
	if out, err := tryRun(nil, append(append([]string{"podman", "exec", m.name}, doctor...), doctorCmd...)...); err != nil || !strings.Contains(out, "all checks passed") {
		t.Errorf("doctor as the service user: %v\n%s", err, out)
	}
	out, err := tryRun(nil, append(append([]string{"podman", "exec", m.name}, append(doctor, "-p", "NoNewPrivileges=yes")...), doctorCmd...)...)
	if err == nil || !strings.Contains(out, "FAIL  newuidmap usable") || !strings.Contains(out, "remove NoNewPrivileges=yes") {
		t.Errorf("doctor under NoNewPrivileges=yes: %v\n%s", err, out)
	}

	saved := t.TempDir()
	run(t, nil, "podman", "cp", m.name+":/var/lib/omero-adi/double", saved)
	if st, err := world.Read(filepath.Join(saved, "double", "state.json")); err != nil {
		t.Error(err)
	} else if len(st.Imports) != 2 {
		t.Errorf("the double saw %d imports, want 2: %+v", len(st.Imports), st.Imports)
	}
	m.exec("systemctl", "stop", "omero-adi")
	show := m.exec("systemctl", "show", "-p", "ActiveState,Result,ExecMainStatus", "omero-adi")
	for _, want := range []string{"ActiveState=inactive", "Result=success", "ExecMainStatus=0"} {
		if !strings.Contains(show, want) {
			t.Errorf("after systemctl stop: %s, want %s", strings.Fields(show), want)
		}
	}
	since := "-" + strconv.Itoa(int(time.Since(start).Seconds())+5) + "s"
	if errs := journalErrors(t, m, since); len(errs) > 0 {
		t.Errorf("the journal has errors:\n%s", strings.Join(errs, "\n"))
	}
	if logged := m.exec("journalctl", "--no-pager", "-q", "-u", "omero-adi", "-o", "cat"); strings.Contains(logged, `"level":"error"`) {
		t.Errorf("the agent logged errors:\n%s", logged)
	}
}

type shownOrder struct {
	Stage       string `json:"stage"`
	Description string `json:"description"`
}

// waitOrder polls `orders show UUID --json` until the order has ended.
func waitOrder(t testing.TB, as func(argv ...string) string, cli []string, uuid string, timeout time.Duration) shownOrder {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var o shownOrder
	for {
		out := as(append(append([]string{}, cli...), "orders", "show", uuid, "--json")...)
		if err := json.Unmarshal([]byte(out), &o); err != nil {
			t.Fatalf("orders show %s: %v: %s", uuid, err, out)
		}
		switch o.Stage {
		case "Import Completed", "Import Failed", "Import Cancelled":
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s still %q after %s", uuid, o.Stage, timeout)
		}
		time.Sleep(time.Second)
	}
}

// journalErrors returns the journal's entries of priority err and worse since then, but for the
// kernel's: a privileged container reads the host's kernel log too.
func journalErrors(t testing.TB, m *machine, since string) []string {
	t.Helper()
	var errs []string
	for _, line := range strings.Split(m.exec("journalctl", "--no-pager", "-q", "-p", "err", "--since", since, "-o", "json"), "\n") {
		if line == "" {
			continue
		}
		var e struct {
			Transport string `json:"_TRANSPORT"`
			Ident     string `json:"SYSLOG_IDENTIFIER"`
			Message   any    `json:"MESSAGE"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("journal entry %q: %v", line, err)
		}
		if e.Transport != "kernel" {
			errs = append(errs, fmt.Sprintf("%s: %v", e.Ident, e.Message))
		}
	}
	return errs
}
