package routingkey

import "testing"

func TestAllowList(t *testing.T) {
	t.Parallel()
	a, err := NewAllowList([]string{"orders.*", "billing.#", "audit"})
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]bool{
		"orders.created": true, "orders": false, "orders.eu.created": false,
		"billing": true, "billing.x": true, "billing.x.y": true, "audit": true, "audit.x": false, "other": false, "": false,
	} {
		if got := a.Allows(k); got != want {
			t.Errorf("Allows(%q) = %v, want %v", k, got, want)
		}
	}
	for _, bad := range [][]string{nil, {"#"}, {"*"}, {"*.#"}, {""}, {"a.b*"}, {"a.#x"}, {"a\nb"}} {
		if _, err := NewAllowList(bad); err == nil {
			t.Errorf("NewAllowList(%q) accepted", bad)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for k, ok := range map[string]bool{"": true, "orders.created": true, "a b/é": true, "a\x00": false, "\xff": false, string(make([]byte, 256)): false} {
		if err := Validate(k); (err == nil) != ok {
			t.Errorf("Validate(%q) = %v, want ok %v", k, err, ok)
		}
	}
}
