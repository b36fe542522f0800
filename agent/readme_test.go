package agent

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestReadmeConfigReference holds README.md's configuration table to the settings structs: every
// key there exists, its default is the one DefaultConfig gives, and every key of the structs is
// documented. A default written as prose (not in backticks, e.g. "host:pid") is computed at run
// time and only checked for presence.
func TestReadmeConfigReference(t *testing.T) {
	doc := readmeReference(t)
	keys := settingKeys(reflect.TypeOf(Config{}), "")
	defaults := reflect.ValueOf(Defaults())
	for key, def := range doc {
		f, ok := keys[key]
		if !ok {
			t.Errorf("README documents %q, which is no setting", key)
			continue
		}
		if def == nil {
			continue
		}
		v := defaults.FieldByIndex(f.index)
		for _, step := range f.tail {
			v = v.FieldByIndex(step)
		}
		if err := sameDefault(v, *def); err != nil {
			t.Errorf("README default of %s: %v", key, err)
		}
	}
	var missing []string
	for key := range keys {
		if _, ok := doc[key]; !ok {
			missing = append(missing, key)
		}
	}
	sort.Strings(missing)
	for _, key := range missing {
		t.Errorf("setting %s is not in README's configuration table", key)
	}
}

// readmeReference parses the configuration table: key (dotted) -> the default as written, nil
// when the cell is prose or empty.
func readmeReference(t *testing.T) map[string]*string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "| key | default | meaning |")
	if start < 0 {
		t.Fatal("README.md has no configuration table (| key | default | meaning |)")
	}
	ticks := regexp.MustCompile("`([^`]*)`")
	out := map[string]*string{}
	for _, line := range strings.Split(text[start:], "\n")[2:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(line, "|") // key and default cells hold no '|'; the meaning may
		if len(cells) < 4 {
			t.Fatalf("README configuration row %q: want key | default | meaning", line)
		}
		keyCell, defCell := cells[1], cells[2]
		var names []string
		table := ""
		for _, m := range ticks.FindAllStringSubmatch(keyCell, -1) {
			k := m[1]
			if strings.HasPrefix(k, "[") {
				end := strings.LastIndex(k, "]")
				table, k = strings.Trim(k[:end+1], "[]"), strings.TrimSpace(k[end+1:])
				if k == "" { // a whole table: [[rules]], [preprocessing.local]
					names = append(names, table)
					continue
				}
			}
			names = append(names, strings.Trim(table+"."+k, "."))
		}
		var defs []string
		for _, m := range ticks.FindAllStringSubmatch(defCell, -1) {
			defs = append(defs, m[1])
		}
		for i, name := range names {
			switch {
			case len(defs) == 0:
				out[name] = nil
			case len(defs) == 1:
				out[name] = &defs[0]
			case len(defs) == len(names):
				out[name] = &defs[i]
			default:
				t.Fatalf("README row %q: %d defaults for %d keys", line, len(defs), len(names))
			}
		}
	}
	return out
}

// settingField locates a key in Config: the index path of its field, through embedded structs,
// and below a map of tables ("groups.NAME.roots") the path inside the map's value.
type settingField struct {
	index []int
	tail  [][]int
}

// settingKeys lists the dotted keys of t's toml fields. Tables are descended into; a map of
// tables becomes NAME; a map of values or a list of tables ([preprocessing.local], [[rules]]) is
// one key.
func settingKeys(t reflect.Type, prefix string) map[string]settingField {
	out := map[string]settingField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if tag == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		if f.Anonymous && tag == "" {
			for k, sf := range settingKeys(f.Type, prefix) {
				out[k] = settingField{index: append([]int{i}, sf.index...), tail: sf.tail}
			}
			continue
		}
		key := prefix + tag
		switch {
		case f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)):
			for k, sf := range settingKeys(f.Type, key+".") {
				out[k] = settingField{index: append([]int{i}, sf.index...), tail: sf.tail}
			}
		case f.Type.Kind() == reflect.Map && f.Type.Elem().Kind() == reflect.Struct:
			for k := range settingKeys(f.Type.Elem(), key+".NAME.") {
				out[k] = settingField{} // per-name tables have no defaults
			}
		default:
			out[key] = settingField{index: []int{i}}
		}
	}
	return out
}

// sameDefault compares a default from the structs with its README spelling.
func sameDefault(v reflect.Value, doc string) error {
	if doc == `""` {
		doc = ""
	}
	got := v.Interface()
	var want any
	var err error
	switch g := got.(type) {
	case time.Duration:
		want, err = time.ParseDuration(doc)
	case string:
		want = doc
	case int:
		want, err = strconv.Atoi(doc)
	case bool:
		want, err = strconv.ParseBool(doc)
	case []string:
		if doc != "[]" || len(g) != 0 {
			return fmt.Errorf("code has %q, README %s", g, doc)
		}
		return nil
	default:
		return fmt.Errorf("no comparison for %T (README %s)", got, doc)
	}
	if err != nil {
		return fmt.Errorf("README value %q: %v", doc, err)
	}
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("code has %v, README says %s", got, doc)
	}
	return nil
}
