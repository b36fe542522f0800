package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/omero-adi/omero-adi/internal/omerotest/world"
)

func jsonMarshal(v any) ([]byte, error)   { return json.Marshal(v) }
func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// connOpts says how a command may obtain a session.
type connOpts struct {
	connection string // login's positional [user@]host[:port]
}

// connect is the double's version of the CLI's login logic (omero-py sessions.py), shared by login
// and by every command that talks to the server. It must run inside world.Update; the only change
// it makes before it can fail is consuming a failure switch, which must be saved.
func connect(st *world.State, p *parsed, dir string, o connOpts) (*world.Session, error) {
	server, name, port := "", p.get("user"), p.get("port")
	if o.connection != "" {
		m := regexp.MustCompile(`^((?P<name>.+)@)?(?P<server>.*?)(:(?P<port>\d{1,5}))?$`).FindStringSubmatch(o.connection)
		server = m[3]
		if m[2] != "" {
			if name != "" {
				return nil, die(4, "Username specified twice: %s and %s", m[2], name)
			}
			name = m[2]
		}
		if m[5] != "" {
			if port != "" {
				return nil, die(5, "Port specified twice: %s and %s", m[5], port)
			}
			port = m[5]
		}
	}
	if s := p.get("server"); s != "" {
		if server != "" {
			return nil, die(3, "Server specified twice: %s and %s", server, s)
		}
		server = s
	}
	prev, hasPrev := readCurrent(dir)
	key := p.get("key")
	if key == "" && server == "" && name == "" && port == "" && active != nil {
		// Inside `omero load`, a command after a login uses that login's client (cli.py conn).
		server, port, key = active.Host, strconv.Itoa(active.Port), active.Key
	}
	if server == "" {
		if key == "" && hasPrev && (name == "" || name == prev.User) {
			server = prev.Host
			if port == "" {
				port = strconv.Itoa(prev.Port)
			}
		} else {
			return nil, die(564, "stdin is not a terminal: cannot request server")
		}
	}
	portN := 4064
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil {
			return nil, die(556, "InternalException: Failed to connect: invalid port %q", port)
		}
		portN = n
	}
	netErr := networkFailure(st, server, portN)
	if key != "" {
		// sessions.py login: any failure to join by key, a server that is down included, is 523.
		s := st.SessionByKey(key)
		if netErr != nil || s == nil {
			if port != "" {
				return nil, die(523, "Bad session key. Cannot join %s on %s:%s.", key, server, port)
			}
			return nil, die(523, "Bad session key. Cannot join %s on %s.", key, server)
		}
		active = &current{Host: server, Port: portN, User: prev.User, Key: key}
		return s, nil
	}
	if hasPrev && !p.has("create") && prev.Host == server && prev.Port == portN && (name == "" || name == prev.User) {
		s := st.SessionByKey(prev.Key)
		switch {
		case netErr != nil:
			// sessions.py login: the stored session cannot be attached; it is forgotten.
			fmt.Printf("Previous session expired for %s on %s:%d\n", prev.User, prev.Host, prev.Port)
			removeCurrent(dir, prev)
		case s != nil && (p.get("group") == "" || st.GroupByID(s.GroupID).Name == p.get("group")):
			fmt.Fprintf(os.Stderr, "Using session for %s@%s:%d. Idle timeout: 10 min. Current group: %s\n",
				prev.User, server, portN, st.GroupByID(s.GroupID).Name)
			active = &current{Host: server, Port: portN, User: prev.User, Key: prev.Key}
			return s, nil
		default:
			fmt.Printf("Previously logged in to %s:%d as %s\n", prev.Host, prev.Port, prev.User)
		}
	}
	if name == "" {
		return nil, die(564, "stdin is not a terminal: cannot request username")
	}
	password := p.get("password")
	if password == "" {
		password = os.Getenv("OMERO_PASSWORD")
	}
	if password == "" {
		return nil, die(564, "stdin is not a terminal: cannot request password")
	}
	if netErr != nil {
		return nil, netErr
	}
	// The password belongs to the --sudo admin when given, else to the user.
	checkName := name
	if sudo := p.get("sudo"); sudo != "" {
		checkName = sudo
	}
	checked := st.UserByName(checkName)
	user := st.UserByName(name)
	switch {
	case st.Failure.BadPassword || checked == nil || checked.Password == "" || checked.Password != password:
		return nil, passwordRefused(checkName)
	case p.get("sudo") != "" && !checked.Admin:
		return nil, die(557, "SecurityViolation: %s is not an administrator and cannot use --sudo", checkName)
	case user == nil && p.get("sudo") != "":
		// The server refuses a session for a user it does not know (RemovedSessionException).
		return nil, die(525, "User account error: no user named '%s'.", name)
	case user == nil:
		return nil, passwordRefused(name)
	}
	var group *world.Group
	if g := p.get("group"); g != "" {
		group = st.GroupByName(g)
		if group == nil {
			return nil, die(556, "InternalException: Failed to connect: ApiUsageException: No group found: %s", g)
		}
		if !group.IsMember(user.ID) {
			return nil, die(557, "SecurityViolation: User %s is not a member of group %s", name, g)
		}
	} else {
		for i := range st.Groups {
			if st.Groups[i].IsMember(user.ID) {
				group = &st.Groups[i]
				break
			}
		}
		if group == nil {
			return nil, die(525, "User account error: %s is in no group.", name)
		}
	}
	s := world.Session{Key: uuid.NewString(), UserID: user.ID, GroupID: group.ID, SudoBy: p.get("sudo"), Created: time.Now()}
	st.Sessions = append(st.Sessions, s)
	if err := writeCurrent(dir, current{Host: server, Port: portN, User: name, Key: s.Key}); err != nil {
		return nil, err
	}
	active = &current{Host: server, Port: portN, User: name, Key: s.Key}
	if !p.has("quiet") {
		fmt.Fprintf(os.Stderr, "Created session for %s@%s:%d. Idle timeout: 10 min. Current group: %s\n",
			name, server, portN, group.Name)
	}
	return &st.Sessions[len(st.Sessions)-1], nil
}

// passwordRefused is what the CLI does without a terminal after the server refused the password:
// it prints the reason, cannot ask again, and dies.
func passwordRefused(name string) error {
	fmt.Fprintf(os.Stderr, "Password check failed for '%s'\n", name)
	return die(564, "stdin is not a terminal: cannot request password")
}

// active is the client of this process once a command logged in or joined a session: inside `omero
// load`, later commands without connection arguments reuse it.
var active *current

// networkFailure applies the failure switches and the one address the double serves, which must
// accept a TCP connection (the test's listener, see omerotest.Double.Down).
func networkFailure(st *world.State, server string, port int) error {
	f := &st.Failure
	if f.UnknownHost != 0 {
		if f.UnknownHost > 0 {
			f.UnknownHost--
		}
		return die(555, "Ice.DNSException: bad host name: '%s'", server)
	}
	if f.ConnectionRefused != 0 {
		if f.ConnectionRefused > 0 {
			f.ConnectionRefused--
		}
		return die(554, "Ice.ConnectionRefusedException: %s:%d isn't running", server, port)
	}
	if server != st.Server.Host {
		return die(555, "Ice.DNSException: bad host name: '%s'", server)
	}
	if port != st.Server.Port {
		return die(554, "Ice.ConnectionRefusedException: %s:%d isn't running", server, port)
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 2*time.Second)
	if err != nil {
		return die(554, "Ice.ConnectionRefusedException: %s:%d isn't running", server, port)
	}
	_ = c.Close()
	return nil
}

// withSession runs fn with a session obtained like every server command does, saving the state
// (also when connecting fails, so that failure switches are consumed).
func withSession(statePath string, p *parsed, o connOpts, fn func(st *world.State, s *world.Session) error) error {
	var result error
	err := world.Update(statePath, func(st *world.State) error {
		s, err := connect(st, p, sessionDir(p), o)
		if err != nil {
			result = err
			return nil
		}
		result = fn(st, s)
		return nil
	})
	if err != nil {
		return err
	}
	return result
}

// readSession is withSession for commands that change nothing (see update).
func readSession(statePath string, p *parsed, fn func(st *world.State, s *world.Session) error) error {
	var result error
	err := update(statePath, p, true, func(st *world.State) {
		s, err := connect(st, p, sessionDir(p), connOpts{})
		if err != nil {
			result = err
			return
		}
		result = fn(st, s)
	})
	if err != nil {
		return err
	}
	return result
}

// update runs fn on the state. A readOnly fn of a command that joins a session by key (-k) while
// no connection failure is switched on runs under a shared lock, so such calls run side by side;
// otherwise fn runs under world.Update, which saves what fn changed.
func update(statePath string, p *parsed, readOnly bool, fn func(st *world.State)) error {
	if readOnly && p.get("key") != "" {
		armed := false
		err := world.View(statePath, func(st *world.State) {
			if armed = st.Failure.UnknownHost != 0 || st.Failure.ConnectionRefused != 0; !armed {
				fn(st)
			}
		})
		if err != nil || !armed {
			return err
		}
	}
	return world.Update(statePath, func(st *world.State) error { fn(st); return nil })
}

func cmdLogin(statePath string, args []string) error {
	p, err := parseArgs("omero login", append(append([]optSpec{}, loginSpecs...),
		optSpec{names: []string{"-t", "--timeout"}, dest: "timeout", value: true, isInt: true}), args)
	if err != nil {
		return err
	}
	if len(p.pos) > 1 {
		return usageError("omero login", "unrecognized arguments: "+p.pos[1])
	}
	if active != nil {
		fmt.Fprintln(os.Stderr, "Active client found")
		return nil
	}
	o := connOpts{}
	if len(p.pos) == 1 {
		o.connection = p.pos[0]
	}
	return withSession(statePath, p, o, func(*world.State, *world.Session) error { return nil })
}

func cmdLogout(statePath string, args []string) error {
	p, err := parseArgs("omero logout", loginSpecs, args)
	if err != nil {
		return err
	}
	dir := sessionDir(p)
	c, ok := readCurrent(dir)
	if !ok {
		return nil
	}
	if err := world.Update(statePath, func(st *world.State) error {
		if s := st.SessionByKey(c.Key); s != nil {
			s.Closed = true
		}
		return nil
	}); err != nil {
		return err
	}
	removeCurrent(dir, c)
	return nil
}

func cmdSessionsKey(args []string) error {
	p, err := parseArgs("omero sessions key", []optSpec{{names: []string{"--session-dir"}, dest: "session_dir", value: true}}, args)
	if err != nil {
		return err
	}
	if len(p.pos) > 0 {
		return usageError("omero sessions key", "unrecognized arguments: "+p.pos[0])
	}
	if c, ok := readCurrent(sessionDir(p)); ok {
		fmt.Println(c.Key)
	}
	return nil
}

func cmdSessionsOpen(statePath string, args []string) error {
	specs := append(append([]optSpec{}, loginSpecs...),
		optSpec{names: []string{"--user-name"}, dest: "user_name", value: true},
		optSpec{names: []string{"--user-id"}, dest: "user_id", value: true, isInt: true},
		optSpec{names: []string{"--group-name"}, dest: "group_name", value: true},
		optSpec{names: []string{"--group-id"}, dest: "group_id", value: true, isInt: true},
		optSpec{names: []string{"--timeout"}, dest: "timeout", value: true, optional: true},
	)
	p, err := parseArgs("omero sessions open", specs, args)
	if err != nil {
		return err
	}
	if len(p.pos) > 0 {
		return usageError("omero sessions open", "unrecognized arguments: "+p.pos[0])
	}
	return withSession(statePath, p, connOpts{}, func(st *world.State, admin *world.Session) error {
		if u := st.UserByID(admin.UserID); u == nil || !u.Admin {
			return die(111, "SecurityViolation: Admin restrictions: Sudo")
		}
		var user *world.User
		switch {
		case p.get("user_name") != "":
			user = st.UserByName(p.get("user_name"))
		case p.get("user_id") != "":
			id, _ := strconv.ParseInt(p.get("user_id"), 10, 64)
			user = st.UserByID(id)
		}
		if user == nil {
			return die(156, "No user found")
		}
		var group *world.Group
		switch {
		case p.get("group_name") != "":
			if group = st.GroupByName(p.get("group_name")); group == nil {
				return die(157, "No group found")
			}
		case p.get("group_id") != "":
			id, _ := strconv.ParseInt(p.get("group_id"), 10, 64)
			if group = st.GroupByID(id); group == nil {
				return die(157, "No group found")
			}
		default:
			for i := range st.Groups {
				if st.Groups[i].IsMember(user.ID) {
					group = &st.Groups[i]
					break
				}
			}
			if group == nil {
				return die(157, "No group found")
			}
		}
		if !group.IsMember(user.ID) {
			return die(557, "SecurityViolation: User %s is not a member of group %s", user.Name, group.Name)
		}
		s := world.Session{Key: uuid.NewString(), UserID: user.ID, GroupID: group.ID,
			SudoBy: st.UserByID(admin.UserID).Name, Created: time.Now()}
		st.Sessions = append(st.Sessions, s)
		fmt.Fprintf(os.Stderr, "Session created for user %s in group %s (timeToIdle: 600 sec, timeToLive: 0 sec)\n", user.Name, group.Name)
		fmt.Println(s.Key)
		return nil
	})
}
