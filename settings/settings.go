// Package settings holds what every component's settings share: a strict TOML decoder (unknown
// keys and numbers given for durations are errors) and Problems, the list of key-named errors that
// a component's Validate returns. It owns no setting itself.
//
// Each component that has settings declares, in its own package, a Config struct with `toml` tags,
// a DefaultConfig() (the only place its defaults are written) and a Validate() error whose keys are
// relative to the component's table ("call_timeout: …"). The agent decodes the settings file once
// over those defaults and adds the table's prefix to each problem ("omero.call_timeout: …") with
// Problems.Add or Prefix. README.md's configuration reference is tested against DefaultConfig.
package settings

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// ErrSettings is matched (errors.Is) by every problem in the settings: the file, the environment,
// the rules or a flag. The command line turns it into exit code 2.
var ErrSettings = errors.New("settings")

// Problem is one bad setting: its dotted key and what is wrong with it, with the bad value.
type Problem struct {
	Key string
	Msg string
}

func (p Problem) String() string {
	if p.Key == "" {
		return p.Msg
	}
	return p.Key + ": " + p.Msg
}

// Error lists the problems of one check. It unwraps to ErrSettings.
type Error struct {
	// Context, when set, leads the message ("invalid settings").
	Context  string
	Problems []Problem
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	msg := strings.Join(parts, "; ")
	if e.Context != "" {
		return e.Context + ": " + msg
	}
	return msg
}

// Is reports whether target is ErrSettings.
func (e *Error) Is(target error) bool { return target == ErrSettings }

// Errorf returns a settings error (ErrSettings) about key; key may be "" for a message that names
// its subject itself.
func Errorf(key, format string, args ...any) error {
	return &Error{Problems: []Problem{{Key: key, Msg: fmt.Sprintf(format, args...)}}}
}

// Problems collects the problems of a Validate. The zero value is ready to use.
type Problems struct {
	list []Problem
}

// Add records a problem with key.
func (p *Problems) Add(key, format string, args ...any) {
	p.list = append(p.list, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// Include records the problems of err (a component's Validate) with prefix put before each key
// ("omero" turns "port: …" into "omero.port: …"). An err that is not an *Error is recorded whole
// under prefix. A nil err adds nothing.
func (p *Problems) Include(prefix string, err error) {
	if err == nil {
		return
	}
	var e *Error
	if !errors.As(err, &e) {
		p.list = append(p.list, Problem{Key: prefix, Msg: err.Error()})
		return
	}
	for _, q := range e.Problems {
		p.list = append(p.list, Problem{Key: join(prefix, q.Key), Msg: q.Msg})
	}
}

// Positive records a problem with key unless d is positive; example is a sensible value ("30s").
func (p *Problems) Positive(key string, d time.Duration, example string) {
	if d <= 0 {
		p.Add(key, "must be a positive duration such as %q, got %q", example, d)
	}
}

// Err returns nil without problems, else an *Error listing them.
func (p *Problems) Err() error { return p.ErrIn("") }

// ErrIn is Err with context leading the message ("invalid settings: …").
func (p *Problems) ErrIn(context string) error {
	if len(p.list) == 0 {
		return nil
	}
	return &Error{Context: context, Problems: append([]Problem(nil), p.list...)}
}

// Prefix puts prefix before every key of err's problems (see Problems.Include).
func Prefix(prefix string, err error) error {
	var p Problems
	p.Include(prefix, err)
	return p.Err()
}

func join(prefix, key string) string {
	switch {
	case prefix == "":
		return key
	case key == "":
		return prefix
	case strings.HasPrefix(key, "["):
		return prefix + key
	}
	return prefix + "." + key
}

// Decode decodes TOML text into v (a pointer to a struct that already holds the defaults). Keys
// that v has no field for are errors, and so is a number where a duration is expected: TOML
// integers would otherwise become nanoseconds ("lease = 60" is 60ns, not a minute).
func Decode(text string, v any) error {
	md, err := toml.Decode(text, v)
	if err != nil {
		return err
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = strconv.Quote(k.String())
		}
		return fmt.Errorf("unknown key %s", strings.Join(keys, ", "))
	}
	durType := reflect.TypeOf(time.Duration(0))
	for _, key := range md.Keys() {
		switch md.Type(key...) {
		case "Integer", "Float":
		default:
			continue
		}
		if t, ok := fieldType(reflect.TypeOf(v), key); ok && t == durType {
			return fmt.Errorf("%s: write a duration as a string such as \"30s\", not a number", key.String())
		}
	}
	return nil
}

// fieldType follows a decoded key through struct fields (by toml tag, embedded structs flattened),
// map values and slice elements to the Go type it was decoded into.
func fieldType(t reflect.Type, key toml.Key) (reflect.Type, bool) {
	for _, part := range key {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Map:
			t = t.Elem()
		case reflect.Struct:
			f, ok := tomlField(t, part)
			if !ok {
				return nil, false
			}
			t = f
		default:
			return nil, false
		}
	}
	return t, true
}

func tomlField(t reflect.Type, name string) (reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		switch {
		case tag == "-":
			continue
		case f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct:
			if ft, ok := tomlField(f.Type, name); ok {
				return ft, true
			}
		case tag == name || (tag == "" && strings.EqualFold(f.Name, name)):
			return f.Type, true
		}
	}
	return nil, false
}

// OneOf reports whether v is one of allowed.
func OneOf(v string, allowed ...string) bool { return slices.Contains(allowed, v) }
