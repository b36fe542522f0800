package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"unicode/utf16"

	"github.com/omero-adi/omero-adi/internal/omerotest/world"
)

// userColumns are the headers of cli.py output_users_list (without --count).
var userColumns = []string{"id", "login", "first name", "last name", "email", "active", "ldap", "admin", "member of", "owner of"}

// cmdUser implements `omero user info [USER…] [--user-id ID] [--user-name NAME] --style json`
// (plugins/user.py UserControl.info): the named users, or the session's own user when none is
// named, one JSON object per row as util/text.py JSONStyle prints them.
func cmdUser(statePath string, args []string) error {
	if len(args) == 0 {
		return usageError("omero user", "the following arguments are required: subcommand")
	}
	if args[0] != "info" && args[0] != "listgroups" {
		return usageError("omero user", fmt.Sprintf("the OMERO double implements only info and listgroups, not '%s'", args[0]))
	}
	specs := append(append([]optSpec{}, loginSpecs...),
		optSpec{names: []string{"--style"}, dest: "style", value: true, choices: []string{"csv", "sql", "plain", "json"}},
		optSpec{names: []string{"--user-id"}, dest: "user_id", value: true},
		optSpec{names: []string{"--user-name"}, dest: "user_name", value: true},
		optSpec{names: []string{"--count"}, dest: "count"},
		optSpec{names: []string{"--sort-by-id"}, dest: "sort"},
		optSpec{names: []string{"--sort-by-login"}, dest: "sort"},
		optSpec{names: []string{"--sort-by-first-name"}, dest: "sort"},
		optSpec{names: []string{"--sort-by-last-name"}, dest: "sort"},
		optSpec{names: []string{"--sort-by-email"}, dest: "sort"},
	)
	if args[0] == "listgroups" {
		specs = append(specs, optSpec{names: []string{"--long"}, dest: "long"}, optSpec{names: []string{"--sort-by-name"}, dest: "sort"})
	}
	p, err := parseArgs("omero user "+args[0], specs, args[1:])
	if err != nil {
		return err
	}
	if p.get("style") != "json" || p.has("count") || p.has("sort") || p.has("long") {
		return die(1, "the OMERO double prints only `user %s [USER…] --style json`", args[0])
	}
	return readSession(statePath, p, func(st *world.State, s *world.Session) error {
		var users []*world.User
		named := append(append([]string{}, p.pos...), p.all("user_id")...)
		named = append(named, p.all("user_name")...)
		for _, n := range named {
			u := st.UserByName(n)
			if id, err := strconv.ParseInt(n, 10, 64); u == nil && err == nil {
				u = st.UserByID(id)
			}
			if u == nil {
				fmt.Fprintf(os.Stderr, "Unknown user: %s\n", n)
				continue
			}
			users = append(users, u)
		}
		if len(named) > 0 && len(users) == 0 {
			return die(514, "No user found")
		}
		if len(named) == 0 {
			users = append(users, st.UserByID(s.UserID))
		}
		rows := make([]string, len(users))
		for i, u := range users {
			rows[i] = userRow(st, u)
		}
		if args[0] == "listgroups" {
			if len(users) != 1 {
				return die(516, "Too many user arguments")
			}
			rows = groupRows(st, users[0])
		}
		printJSONRows(rows)
		return nil
	})
}

// printJSONRows prints JSONStyle rows: a JSON list with one row a line.
func printJSONRows(rows []string) {
	if len(rows) == 0 {
		fmt.Println("[]")
		return
	}
	for i, r := range rows {
		prefix, suffix := "", ","
		if i == 0 {
			prefix = "["
		}
		if i == len(rows)-1 {
			suffix = "]"
		}
		fmt.Println(prefix + r + suffix)
	}
}

// groupColumns are the headers of cli.py output_groups_list (without --long).
var groupColumns = []string{"id", "name", "perms", "ldap", "# of owners", "# of members"}

// groupRows are the groups user u belongs to (plugins/user.py listgroups: containedGroups) as
// output_groups_list prints them; members are counted without the owners. The double keeps no
// permissions: every group prints as private ("rw----").
func groupRows(st *world.State, u *world.User) []string {
	var rows []string
	for _, g := range st.Groups {
		if !g.IsMember(u.ID) {
			continue
		}
		vals := []string{strconv.FormatInt(g.ID, 10), g.Name, "rw----", "False",
			strconv.Itoa(len(g.Owners)), strconv.Itoa(len(g.Members) - len(g.Owners))}
		parts := make([]string, len(vals))
		for i, v := range vals {
			parts[i] = pyJSON(groupColumns[i]) + ": " + pyJSON(v)
		}
		rows = append(rows, "{"+strings.Join(parts, ", ")+"}")
	}
	return rows
}

// userRow is one user as JSONStyle prints it: json.dumps of a dict of the row's values, each
// turned into a string by text.py Column (so ids and booleans are strings too).
func userRow(st *world.State, u *world.User) string {
	admin := ""
	var member, owner []string
	for _, g := range st.Groups {
		switch {
		case !g.IsMember(u.ID):
		case g.ID == 0:
			admin = "Yes"
		case g.IsOwner(u.ID):
			owner = append(owner, strconv.FormatInt(g.ID, 10))
		default:
			member = append(member, strconv.FormatInt(g.ID, 10))
		}
	}
	ldap := "False"
	if u.LDAP {
		ldap = "True"
	}
	vals := []string{strconv.FormatInt(u.ID, 10), u.Name, u.FirstName, u.LastName, u.Email, "Yes", ldap, admin,
		strings.Join(member, ","), strings.Join(owner, ",")}
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = pyJSON(userColumns[i]) + ": " + pyJSON(v)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// pyJSON is Python's json.dumps of a string (ensure_ascii): the short escapes, \u00XX for other
// control characters, and every character beyond ASCII as \uXXXX (UTF-16, surrogate pairs above
// the BMP); '<', '>' and '&' stay as they are.
func pyJSON(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r < 0x20 || (r >= 0x7f && r <= 0xffff):
			fmt.Fprintf(&b, `\u%04x`, r)
		case r > 0xffff:
			hi, lo := utf16.EncodeRune(r)
			fmt.Fprintf(&b, `\u%04x\u%04x`, hi, lo)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
