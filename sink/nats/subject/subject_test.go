package subject

import "testing"

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		s  string
		ok bool
	}{
		{"orders", true}, {"orders.created.v1", true}, {"a-b_c.D9", true},
		{"", false}, {"orders.", false}, {".orders", false}, {"a..b", false}, {"orders.*", false}, {"orders.>", false},
		{"or ders", false}, {"a\tb", false}, {"$JS.API.STREAM.DELETE.x", false}, {"$SYS.x", false}, {"_INBOX.abc", false},
		{"é", false}, {string(make([]byte, MaxLen+1)), false},
	} {
		if err := Validate(tc.s); (err == nil) != tc.ok {
			t.Errorf("Validate(%q) = %v, want ok %v", tc.s, err, tc.ok)
		}
	}
}

func TestAllowList(t *testing.T) {
	t.Parallel()
	a, err := NewAllowList([]string{"orders.*", "billing.>", "audit"})
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string]bool{
		"orders.created": true, "orders": false, "orders.eu.created": false,
		"billing.x": true, "billing.x.y": true, "billing": false, "audit": true, "audit.x": false, "other": false,
	} {
		if got := a.Allows(s); got != want {
			t.Errorf("Allows(%q) = %v, want %v", s, got, want)
		}
	}
	for _, bad := range [][]string{nil, {">"}, {"*"}, {"*.x"}, {"$JS.>"}, {"a.>.b"}, {"a.b*"}, {"a..b"}} {
		if _, err := NewAllowList(bad); err == nil {
			t.Errorf("NewAllowList(%q) accepted", bad)
		}
	}
}
