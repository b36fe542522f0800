package omero

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
)

// ErrPassword: the server refused the username or the password of a sign-in (CheckPassword).
var ErrPassword = errors.New("OMERO refused the username or password")

// Account is what the server says about a person who signed in with CheckPassword.
type Account struct {
	Name    string   // the login name
	Admin   bool     // a member of the system group
	OwnerOf []string // names of the groups the person owns (leads)
	Groups  []string // names of every group the person belongs to
}

// CheckPassword checks user's password with the server in one `omero load` run, as that user:
// `login -s HOST -p PORT -u USER` (the password in OMERO_PASSWORD of this call only, never argv or
// logs), `user info --style json` (plugins/user.py info: "admin", and "owner of" as group ids),
// `user listgroups --style json` (the ids and names of the user's groups) and `logout`, in a fresh
// session folder below SessionRoot that is removed afterwards. A refused password returns
// ErrPassword: without a terminal the CLI prints the server's reason and exits 564 "cannot request
// password" (sessions.py login); an unreachable server ErrConnection.
func (c *Client) CheckPassword(ctx context.Context, user, password string) (Account, error) {
	if err := checkArg("user", user); err != nil {
		return Account{}, err
	}
	if password == "" {
		return Account{}, fmt.Errorf("%w: the password is empty", ErrPassword)
	}
	if err := os.MkdirAll(c.cfg.SessionRoot, 0o700); err != nil {
		return Account{}, fmt.Errorf("create session folder: %w", err)
	}
	dir, err := os.MkdirTemp(c.cfg.SessionRoot, "signin-")
	if err != nil {
		return Account{}, fmt.Errorf("create session folder: %w", err)
	}
	s := &Session{User: user, Dir: dir}
	defer c.Close(ctx, s)
	script := cliLine(append(append([]string{"login"}, c.server()...), "-u", user)) + "\n" +
		cliLine([]string{"user", "info", "--style", "json"}) + "\n" +
		cliLine([]string{"user", "listgroups", "--style", "json"}) + "\nlogout\n"
	env := []string{"OMERO_SESSIONDIR=" + dir, "OMERO_PASSWORD=" + password}
	res, err := c.run(ctx, call{args: []string{"load"}, env: env, stdin: strings.NewReader(script), timeout: c.cfg.CallTimeout, secret: password})
	if err != nil {
		return Account{}, fmt.Errorf("sign in: %w", err)
	}
	log := c.log.WithFields(logrus.Fields{"user": user, "exit": res.code})
	switch res.code {
	case 0:
		s.loggedOut = true
	case exitNoTerminal, exitUnknownUser:
		log.Info("OMERO refused a sign-in")
		return Account{}, fmt.Errorf("%w for %q", ErrPassword, user)
	case exitRefused:
		return Account{}, c.unreachable(1, res)
	case exitUnknownHost:
		return Account{}, fmt.Errorf("%w: unknown host %q; fix omero.host (env OMERO_HOST)", ErrConnection, c.cfg.Host)
	default:
		return Account{}, fmt.Errorf("%w: sign-in of %q (exit %d)%s", ErrCall, user, res.code, detail(res))
	}
	acc, err := parseAccount(res.stdout)
	if err != nil {
		return Account{}, fmt.Errorf("%w: sign-in of %q: %v", ErrCall, user, err)
	}
	acc.Name = user
	return acc, nil
}

// parseAccount reads the two JSON lists `user info` and `user listgroups` printed (util/text.py
// JSONStyle: every value a string).
func parseAccount(stdout []byte) (Account, error) {
	start := bytes.IndexByte(stdout, '[')
	if start < 0 {
		return Account{}, errors.New("`user info` printed no JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(stdout[start:]))
	var users, groups []map[string]string
	if err := dec.Decode(&users); err != nil {
		return Account{}, fmt.Errorf("read `user info`: %v", err)
	}
	if err := dec.Decode(&groups); err != nil {
		return Account{}, fmt.Errorf("read `user listgroups`: %v", err)
	}
	if len(users) != 1 {
		return Account{}, fmt.Errorf("`user info` printed %d users, want 1", len(users))
	}
	u := users[0]
	names := map[string]string{}
	var acc Account
	for _, g := range groups {
		names[g["id"]] = g["name"]
		if g["name"] != "" {
			acc.Groups = append(acc.Groups, g["name"])
		}
	}
	acc.Admin = u["admin"] == "Yes"
	for _, id := range strings.Split(u["owner of"], ",") {
		if n := names[strings.TrimSpace(id)]; n != "" {
			acc.OwnerOf = append(acc.OwnerOf, n)
		}
	}
	return acc, nil
}
