package omero

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Ping opens and closes an admin session in one `omero load` run (`login -s HOST -p PORT -u
// ADMIN`, the password in this call's environment, then `logout`) in a throwaway session folder,
// and returns what the CLI said about the session it created, e.g. "Created session for
// root@omero:4064. … Current group: system". It does not retry: a server that is down is an
// ErrConnection "OMERO server unreachable at HOST:PORT".
func (c *Client) Ping(ctx context.Context) (string, error) {
	if err := os.MkdirAll(c.cfg.SessionRoot, 0o700); err != nil {
		return "", fmt.Errorf("create session folder: %w", err)
	}
	dir, err := os.MkdirTemp(c.cfg.SessionRoot, "doctor-")
	if err != nil {
		return "", fmt.Errorf("create session folder: %w", err)
	}
	defer removeDir(dir)
	script := c.loginLine(c.cfg.AdminUser) + "\nlogout\n"
	res, err := c.run(ctx, call{args: []string{"load"}, env: []string{"OMERO_SESSIONDIR=" + dir, "OMERO_PASSWORD=" + c.cfg.AdminPassword},
		stdin: strings.NewReader(script), timeout: c.cfg.CallTimeout})
	if err != nil {
		return "", fmt.Errorf("log in as %s: %w", c.cfg.AdminUser, err)
	}
	if res.code != 0 {
		return "", c.loginError(res, c.cfg.AdminUser, "", 1)
	}
	for _, line := range strings.Split(res.stderr, "\n") {
		if strings.Contains(line, "session for ") {
			return strings.TrimSpace(line), nil
		}
	}
	return fmt.Sprintf("logged in to %s:%d", c.cfg.Host, c.cfg.Port), nil
}

// ImporterJars returns the folder whose OMERO.java jars `omero import` would use, looking where
// omero-py's import plugin does (plugins/import.py ImportControl._get_classpath_logback and
// _userdir_jars): OMERODIR/lib/client, else the jar cache's OMERO.java.txt, which names the
// unpacked OMERO.java folder below XDG_CACHE_HOME (default ~/.cache)/OMERO.py[/MAJOR]/jars. The
// environment is the one the CLI gets. Without jars, the first import would try to download them.
func (c *Client) ImporterJars() (string, error) {
	env := map[string]string{}
	for _, kv := range c.childEnv(nil) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	var looked []string
	if d := env["OMERODIR"]; d != "" {
		client := filepath.Join(d, "lib", "client")
		if hasJars(client) {
			return client, nil
		}
		looked = append(looked, client)
	}
	cache := env["XDG_CACHE_HOME"]
	if cache == "" && env["HOME"] != "" {
		cache = filepath.Join(env["HOME"], ".cache")
	}
	if cache != "" {
		txts, _ := filepath.Glob(filepath.Join(cache, "OMERO.py", "*", "jars", "OMERO.java.txt"))
		txts = append([]string{filepath.Join(cache, "OMERO.py", "jars", "OMERO.java.txt")}, txts...)
		for _, txt := range txts {
			b, err := os.ReadFile(txt)
			if err != nil {
				continue
			}
			libs := filepath.Join(filepath.Dir(txt), strings.TrimSpace(string(b)), "libs")
			if hasJars(libs) {
				return libs, nil
			}
			looked = append(looked, libs)
		}
		looked = append(looked, filepath.Join(cache, "OMERO.py", "…", "jars"))
	}
	return "", fmt.Errorf("no OMERO.java importer jars in %s", strings.Join(looked, ", "))
}

func hasJars(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(dir, "*.jar"))
	return len(m) > 0
}
