package webhook_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/pgoutbox/pgoutbox/outbox"
	"github.com/pgoutbox/pgoutbox/sink/sinktest"
	"github.com/pgoutbox/pgoutbox/sink/webhook"
)

// paths records the escaped path and query of every request.
type paths struct {
	mu  sync.Mutex
	got []string
}

func (p *paths) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.got = append(p.got, r.URL.RequestURI())
	p.mu.Unlock()
	w.WriteHeader(204)
}

func (p *paths) all() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.got...)
}

// Without append_route the configured URL is used whatever the Route says.
func TestRouteIgnoredByDefault(t *testing.T) {
	t.Parallel()
	p := &paths{}
	hs := httptest.NewServer(p)
	defer hs.Close()
	s := newSink(t, hs.URL+"/hooks?tenant=a", nil)
	var batch []outbox.Record
	for i, route := range []string{"orders", "/admin", "../../etc", "x?y=1", "https://evil.example/"} {
		r := sinktest.Record("k", i)
		r.Route = route
		batch = append(batch, r)
	}
	if err := s.Send(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	for _, got := range p.all() {
		if got != "/hooks?tenant=a" {
			t.Errorf("request went to %q, want the configured /hooks?tenant=a", got)
		}
	}
}

// With append_route the Route is one escaped path segment under the configured path; anything that
// could leave it is a permanent failure naming the rule, and the key's later records go on.
func TestAppendRouteOneSegment(t *testing.T) {
	t.Parallel()
	for _, base := range []string{"/hooks", "/hooks/"} {
		p := &paths{}
		hs := httptest.NewServer(p)
		s := newSink(t, hs.URL+base+"?tenant=a", func(c *webhook.Config) { c.AppendRoute = true })
		ok := map[string]string{
			"orders":        "/hooks/orders?tenant=a",
			"orders v2":     "/hooks/orders%20v2?tenant=a",
			"a:b@c":         "/hooks/a:b@c?tenant=a",
			"käse":          "/hooks/k%C3%A4se?tenant=a",
			"x;y=1":         "/hooks/x%3By=1?tenant=a",
			"":              base + "?tenant=a",
			"a.b":           "/hooks/a.b?tenant=a",
			"order_created": "/hooks/order_created?tenant=a",
		}
		bad := map[string]string{
			"/admin": `"/"`, "a/b": `"/"`, "..": `".."`, "a..b": `".."`, ".": `"."`, `a\b`: `"\\"`, "x?y=1": `"?"`,
			"x#f": `"#"`, "%2e%2e": `"%"`, "%2F": `"%"`, "a\nb": "control character", "a\x00": "control character",
			"a\x7f": "control character", strings.Repeat("r", 256): "256 bytes, the limit is 255",
		}
		var batch []outbox.Record
		want := map[string]string{} // id → path
		wantErr := map[string]string{}
		seq := 0
		for route, path := range ok {
			r := sinktest.Record("k", seq)
			seq++
			r.Route = route
			batch = append(batch, r)
			want[r.ID] = path
		}
		for route, rule := range bad {
			r := sinktest.Record("k", seq)
			seq++
			r.Route = route
			batch = append(batch, r)
			wantErr[r.ID] = rule
		}
		err := s.Send(context.Background(), batch)
		var be *outbox.BatchError
		if !errors.As(err, &be) {
			t.Fatalf("Send = %v, want a BatchError", err)
		}
		for i, r := range batch {
			e := be.Errs[i]
			if rule, isBad := wantErr[r.ID]; isBad {
				if !outbox.IsPermanent(e) || !strings.Contains(e.Error(), rule) || !strings.Contains(e.Error(), "Route") {
					t.Errorf("base %s, Route %q: %v, want a permanent failure naming %s", base, r.Route, e, rule)
				}
				continue
			}
			if e != nil {
				t.Errorf("base %s, Route %q: %v", base, r.Route, e)
			}
		}
		got := map[string]bool{}
		for _, g := range p.all() {
			got[g] = true
		}
		for id, path := range want {
			if !got[path] {
				t.Errorf("base %s: record %s: no request to %s (got %v)", base, id, path, p.all())
			}
		}
		if n := len(p.all()); n != len(ok) {
			t.Errorf("base %s: %d requests, want %d (one per valid Route)", base, n, len(ok))
		}
		hs.Close()
	}
}
