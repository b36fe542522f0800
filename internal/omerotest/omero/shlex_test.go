package main

import (
	"reflect"
	"testing"
)

func TestShlexSplit(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want []string
		bad  bool
	}{
		{"words", "map-set A:1 mapValue k v", []string{"map-set", "A:1", "mapValue", "k", "v"}, false},
		{"single quotes", `a 'b c' 'it'"'"'s'`, []string{"a", "b c", "it's"}, false},
		{"double quotes keep other backslashes", `"a \" \\ \n"`, []string{`a " \ \n`}, false},
		{"backslash outside quotes", `a\ b \'`, []string{"a b", "'"}, false},
		{"empty quoted word", `k ''`, []string{"k", ""}, false},
		{"adjacent parts join", `a'b'"c"d`, []string{"abcd"}, false},
		{"unclosed", `'abc`, nil, true},
		{"trailing backslash", `abc\`, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := shlexSplit(c.in)
			if (err != nil) != c.bad || (!c.bad && !reflect.DeepEqual(got, c.want)) {
				t.Errorf("shlexSplit(%q) = %q, %v; want %q", c.in, got, err, c.want)
			}
		})
	}
}
