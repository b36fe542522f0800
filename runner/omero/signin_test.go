package omero

import (
	"context"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/omero-adi/omero-adi/internal/omerotest"
)

func TestCheckPassword(t *testing.T) {
	const alicePw, bobPw = "alice's pw; rm -rf", "b0b"
	f := setup(t)
	f.d.Update(t, func(st *omerotest.State) {
		st.UserByName("alice").Password = alicePw
		st.UserByName("bob").Password = bobPw
		st.Groups[1].Owners = []int64{omerotest.BobID}
	})
	cases := []struct {
		name, user, password string
		want                 Account
		err                  error
	}{
		{"a member", "alice", alicePw, Account{Name: "alice", Groups: []string{"Demo"}}, nil},
		{"a group owner", "bob", bobPw, Account{Name: "bob", Groups: []string{"Demo"}, OwnerOf: []string{"Demo"}}, nil},
		{"an admin", omerotest.AdminUser, testPassword, Account{Name: "root", Admin: true, Groups: []string{"system"}}, nil},
		{"a wrong password", "alice", bobPw, Account{}, ErrPassword},
		{"an unknown user", "mallory", alicePw, Account{}, ErrPassword},
		{"no password", "alice", "", Account{}, ErrPassword},
		{"a user name the CLI would read as an option", "-alice", alicePw, Account{}, ErrRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := f.c.CheckPassword(context.Background(), c.user, c.password)
			if !errors.Is(err, c.err) || !reflect.DeepEqual(got, c.want) {
				t.Fatalf("CheckPassword(%q) = %+v, %v; want %+v, %v", c.user, got, err, c.want, c.err)
			}
			if err != nil && c.password != "" && strings.Contains(err.Error(), c.password) {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
	st := f.d.State(t)
	if st.PasswordInArgv {
		t.Error("a password reached argv")
	}
	entries, err := os.ReadDir(f.cfg.SessionRoot)
	if err != nil || len(entries) != 0 {
		t.Errorf("session folders left behind: %v %v", entries, err)
	}
	for _, s := range st.Sessions {
		if !s.Closed {
			t.Errorf("session %+v left open", s)
		}
	}
}

func TestAccount(t *testing.T) {
	f := setup(t)
	f.d.Update(t, func(st *omerotest.State) { st.Groups[1].Owners = []int64{omerotest.BobID} })
	got, err := f.c.Account(context.Background(), "bob")
	if want := (Account{Name: "bob", Groups: []string{"Demo"}, OwnerOf: []string{"Demo"}}); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Account(bob) = %+v, %v; want %+v", got, err, want)
	}
	if _, err := f.c.Account(context.Background(), "mallory"); !errors.Is(err, ErrCall) {
		t.Errorf("Account(mallory): %v, want ErrCall", err)
	}
	f.d.Update(t, func(st *omerotest.State) { st.UserByName(omerotest.AdminUser).Password = "changed" })
	if _, err := f.c.Account(context.Background(), "bob"); !errors.Is(err, ErrLogin) || strings.Contains(err.Error(), testPassword) {
		t.Errorf("Account with a wrong admin password: %v, want ErrLogin without the password", err)
	}
}
