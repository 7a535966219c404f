package routes_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pgoutbox/pgoutbox/sink/internal/routes"
)

var spec = routes.Spec{Prefix: "x: config: ", Field: "Targets", Allowed: "AllowedTargets", Noun: "target",
	Valid: func(s string) error {
		if strings.Contains(s, " ") {
			return errors.New("has a space")
		}
		return nil
	},
	Allow: func(p []string) []error {
		if len(p) == 0 {
			return []error{errors.New(" is empty")}
		}
		return nil
	}}

// Check names the field, the destination and the rule of each bad entry, in destination order, and
// refuses an allow-list beside a configured target.
func TestCheck(t *testing.T) {
	errs := spec.Check(map[string]string{"b": "a b", "a": "ok", "": "t", "c": ""},
		map[string][]string{"a": {"p"}, "d": {}, "e": {"p"}, "": {"p"}})
	var got []string
	for _, err := range errs {
		got = append(got, err.Error())
	}
	want := []string{
		`x: config: Targets: empty destination or target in "" → "t"`,
		`x: config: Targets["b"]: has a space`,
		`x: config: Targets: empty destination or target in "c" → ""`,
		`x: config: AllowedTargets: empty destination`,
		`x: config: AllowedTargets["a"] is set but Targets["a"] is "ok", which always wins: remove one of them`,
		`x: config: AllowedTargets["d"] is empty`,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Check:\n got %q\nwant %q", got, want)
	}
	if errs := spec.Check(map[string]string{"a": "ok"}, map[string][]string{"b": {"p"}}); len(errs) != 0 {
		t.Errorf("a valid configuration: %v", errs)
	}
}
