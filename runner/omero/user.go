package omero

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Person is an OMERO user as `omero user info --style json` prints them (omero-py plugins/user.py
// info, cli.py output_users_list, util/text.py JSONStyle: a JSON list of rows whose values are
// all strings, "email" "" when unset).
type Person struct {
	ID        int64
	Login     string
	FirstName string
	LastName  string
	Email     string // "" when the user has none
}

// Name is the person's first and last name, or the login when both are empty.
func (p Person) Name() string {
	if n := strings.TrimSpace(p.FirstName + " " + p.LastName); n != "" {
		return n
	}
	return p.Login
}

// personTTL is how long a user's name and address read at a login are reused before a login reads
// them again.
const personTTL = time.Hour

type cachedPerson struct {
	p  Person
	at time.Time
}

// userInfoLine is the `omero load` line that prints the session's own user (under --sudo: the
// order's user).
const userInfoLine = "user info --style json"

// Known returns user's name and address as the last login that read them found (Config.ReadUsers),
// while that is younger than personTTL.
func (c *Client) Known(user string) (Person, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.people[user]
	if !ok || time.Since(e.at) > personTTL {
		return Person{}, false
	}
	return e.p, true
}

// wantPerson reports whether the login of user should read their name and address.
func (c *Client) wantPerson(user string) bool {
	if !c.cfg.ReadUsers {
		return false
	}
	_, ok := c.Known(user)
	return !ok
}

func (c *Client) remember(p Person) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.people[p.Login] = cachedPerson{p: p, at: time.Now()}
}

// parsePerson finds the JSON list `user info --style json` printed among stdout's lines (JSONStyle
// prints "[{…}," … "{…}]" one row a line, or "[]") and returns the row of user. Lines before and
// after it (the login's, other commands of the same load) are not read.
func parsePerson(stdout []byte, user string) (Person, error) {
	lines := strings.Split(string(stdout), "\n")
	start := -1
	for i, l := range lines {
		if t := strings.TrimSpace(l); strings.HasPrefix(t, "[{") || t == "[]" {
			start = i
			break
		}
	}
	if start < 0 {
		return Person{}, fmt.Errorf("%w: `%s` printed no JSON list", ErrCall, userInfoLine)
	}
	end := start
	for end < len(lines) && !strings.HasSuffix(strings.TrimSpace(lines[end]), "]") {
		end++
	}
	if end == len(lines) {
		end--
	}
	var rows []map[string]string
	if err := json.Unmarshal([]byte(strings.Join(lines[start:end+1], "\n")), &rows); err != nil {
		return Person{}, fmt.Errorf("%w: `%s`: %v", ErrCall, userInfoLine, err)
	}
	for _, r := range rows {
		if r["login"] != user {
			continue
		}
		id, _ := strconv.ParseInt(r["id"], 10, 64)
		return Person{ID: id, Login: r["login"], FirstName: r["first name"], LastName: r["last name"],
			Email: strings.TrimSpace(r["email"])}, nil
	}
	return Person{}, fmt.Errorf("%w: `%s` did not list user %q", ErrCall, userInfoLine, user)
}
