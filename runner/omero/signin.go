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
	return c.account(ctx, user, password, user)
}

// Account reads what the server says about user (admin, owned groups) as CheckPassword does, in
// one `omero load` run logged in as the admin (omero.user) with `user info USER` and `user
// listgroups USER`: for people whom a reverse proxy signed in.
func (c *Client) Account(ctx context.Context, user string) (Account, error) {
	if err := checkArg("user", user); err != nil {
		return Account{}, err
	}
	acc, err := c.account(ctx, c.cfg.AdminUser, c.cfg.AdminPassword, user)
	if errors.Is(err, ErrPassword) {
		return Account{}, fmt.Errorf("%w: check the admin omero.user %q and its password (OMERO_PASSWORD)", ErrLogin, c.cfg.AdminUser)
	}
	return acc, err
}

// account logs in as login with password and reads user's account (see CheckPassword).
func (c *Client) account(ctx context.Context, login, password, user string) (Account, error) {
	if err := os.MkdirAll(c.cfg.SessionRoot, 0o700); err != nil {
		return Account{}, fmt.Errorf("create session folder: %w", err)
	}
	dir, err := os.MkdirTemp(c.cfg.SessionRoot, "signin-")
	if err != nil {
		return Account{}, fmt.Errorf("create session folder: %w", err)
	}
	s := &Session{User: login, Dir: dir}
	defer c.Close(ctx, s)
	var who []string
	if login != user {
		who = []string{user}
	}
	script := c.loginLine(login) + "\n" +
		cliLine(append([]string{"user", "info", "--style", "json"}, who...)) + "\n" +
		cliLine(append([]string{"user", "listgroups", "--style", "json"}, who...)) + "\nlogout\n"
	env := []string{"OMERO_SESSIONDIR=" + dir, "OMERO_PASSWORD=" + password}
	res, err := c.run(ctx, call{args: []string{"load"}, env: env, stdin: strings.NewReader(script), timeout: c.cfg.CallTimeout, secret: password})
	if err != nil {
		return Account{}, fmt.Errorf("sign in: %w", err)
	}
	log := c.log.WithFields(logrus.Fields{"user": login, "exit": res.code})
	switch res.code {
	case 0:
		s.loggedOut = true
	case exitNoTerminal, exitUnknownUser:
		log.Info("OMERO refused a sign-in")
		return Account{}, fmt.Errorf("%w for %q", ErrPassword, login)
	case exitRefused:
		return Account{}, c.unreachable(1, res)
	case exitUnknownHost:
		return Account{}, fmt.Errorf("%w: unknown host %q; fix omero.host (env OMERO_HOST)", ErrConnection, c.cfg.Host)
	default:
		return Account{}, fmt.Errorf("%w: account of %q (exit %d)%s", ErrCall, user, res.code, detail(res))
	}
	acc, err := parseAccount(res.stdout)
	if err != nil {
		return Account{}, fmt.Errorf("%w: account of %q: %v", ErrCall, user, err)
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
