package topicname_test

import (
	"strings"
	"testing"

	"github.com/pgoutbox/pgoutbox/sink/kafka/topicname"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"orders", "orders.v1", "a_b-c.D9", strings.Repeat("x", topicname.MaxLen), "..."} {
		if err := topicname.Validate(ok); err != nil {
			t.Errorf("Validate(%q) = %v, want nil", ok, err)
		}
	}
	for name, want := range map[string]string{
		"":                                      "empty",
		".":                                     "reserved",
		"..":                                    "reserved",
		strings.Repeat("x", topicname.MaxLen+1): "limit of 249",
		"a/b":                                   "'/' at byte 1",
		"orders v1":                             "' ' at byte 6",
		"ünicode":                               "at byte 0",
		"line\nbreak":                           `'\n' at byte 4`,
	} {
		err := topicname.Validate(name)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(%q) = %v, want an error containing %q", name, err, want)
		}
	}
}

func TestAllowList(t *testing.T) {
	t.Parallel()
	a, err := topicname.NewAllowList([]string{"orders.*", "audit", "eu-*"})
	if err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]bool{
		"orders.v1": true, "orders.eu.created": true, "audit": true, "eu-west": true,
		"orders.": false, "orders": false, "ordersX": false, "orders-v1": false, "audit.v2": false, "xaudit": false,
		"eu-": false, "": false, "billing": false,
	} {
		if got := a.Allows(topic); got != want {
			t.Errorf("Allows(%q) = %v, want %v", topic, got, want)
		}
	}
	if s := a.String(); s != "orders.*, audit, eu-*" {
		t.Errorf("String() = %q", s)
	}
}

func TestAllowListErrorsNameThePattern(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		patterns []string
		want     []string
	}{
		{nil, []string{"empty allow-list"}},
		{[]string{}, []string{"empty allow-list"}},
		{[]string{"ok", ""}, []string{"[1]", "empty pattern"}},
		{[]string{"*"}, []string{"[0]", "every topic"}},
		{[]string{"ord*ers"}, []string{"[0]", "may only end a pattern"}},
		{[]string{"orders.**"}, []string{"[0]", "may only end a pattern"}},
		{[]string{".*"}, []string{"[0]", "regular expression"}},
		{[]string{"a", "orders/.*"}, []string{"[1]", "'/' at byte 6"}},
		{[]string{"orders v1"}, []string{"[0]", "neither a topic name nor a prefix"}},
		{[]string{"^orders$"}, []string{"[0]", "neither a topic name nor a prefix"}},
		{[]string{strings.Repeat("p", topicname.MaxLen) + "*"}, []string{"[0]", "leaves no room"}},
	} {
		_, err := topicname.NewAllowList(tc.patterns)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("NewAllowList(%q) = %v, want an error containing %q", tc.patterns, err, w)
			}
		}
	}
}
