package tcpproxy_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/tcpproxy"
)

// echoServer echoes every line back until the client closes; it is closed when t ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func newProxy(t *testing.T, target string) *tcpproxy.Proxy {
	t.Helper()
	p, err := tcpproxy.New("127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes line and reads it back within timeout.
func roundTrip(c net.Conn, line string, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(got, "\n"), err
}

func TestPass(t *testing.T) {
	t.Parallel()
	p := newProxy(t, echoServer(t))
	c := dial(t, p.Addr())
	for _, msg := range []string{"hello", strings.Repeat("x", 100_000)} {
		got, err := roundTrip(c, msg, 5*time.Second)
		if err != nil || got != msg {
			t.Fatalf("round trip of %d bytes = %d bytes, %v", len(msg), len(got), err)
		}
	}
	if p.Accepted() != 1 || p.Active() != 1 {
		t.Errorf("accepted %d, active %d; want 1, 1", p.Accepted(), p.Active())
	}
}

func TestLatency(t *testing.T) {
	t.Parallel()
	p := newProxy(t, echoServer(t))
	c := dial(t, p.Addr())
	if _, err := roundTrip(c, "warm", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.SetLatency(100 * time.Millisecond)
	start := time.Now()
	if got, err := roundTrip(c, "slow", 5*time.Second); err != nil || got != "slow" {
		t.Fatalf("round trip = %q, %v", got, err)
	}
	// Both directions are delayed: at least 2 × 100 ms.
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("round trip took %s with 100ms latency each way, want >= 200ms", d)
	}
	p.SetLatency(0)
	if got, err := roundTrip(c, "fast", 5*time.Second); err != nil || got != "fast" {
		t.Fatalf("round trip after latency removed = %q, %v", got, err)
	}
}

func TestBlackholeThenPass(t *testing.T) {
	t.Parallel()
	p := newProxy(t, echoServer(t))
	old := dial(t, p.Addr())
	if _, err := roundTrip(old, "before", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	// The existing connection: writes succeed, nothing comes back, and no FIN or RST either.
	_, err := roundTrip(old, "lost", 300*time.Millisecond)
	if !isTimeout(err) {
		t.Fatalf("read on a blackholed connection = %v, want a timeout", err)
	}
	// A new connection is accepted (the dial succeeds) but nothing is forwarded.
	fresh := dial(t, p.Addr())
	if _, err := roundTrip(fresh, "lost too", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("read on a connection accepted while blackholed = %v, want a timeout", err)
	}
	p.Pass()
	if _, err := roundTrip(old, "still lost", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("a connection blackholed before Pass must stay dead, read = %v", err)
	}
	c := dial(t, p.Addr())
	if got, err := roundTrip(c, "after", 5*time.Second); err != nil || got != "after" {
		t.Fatalf("new connection after Pass = %q, %v", got, err)
	}
}

func TestReset(t *testing.T) {
	t.Parallel()
	p := newProxy(t, echoServer(t))
	c := dial(t, p.Addr())
	if _, err := roundTrip(c, "before", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := p.Reset(); n != 1 {
		t.Errorf("Reset closed %d connections, want 1", n)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if err == nil || isTimeout(err) {
		t.Fatalf("read after Reset = %v, want a connection error", err)
	}
	// The proxy keeps serving new connections.
	c2 := dial(t, p.Addr())
	if got, err := roundTrip(c2, "after", 5*time.Second); err != nil || got != "after" {
		t.Fatalf("new connection after Reset = %q, %v", got, err)
	}
}

func TestRefuse(t *testing.T) {
	t.Parallel()
	p := newProxy(t, echoServer(t))
	p.Refuse()
	if err := tryRoundTrip(p.Addr()); err == nil || isTimeout(err) {
		t.Fatalf("round trip through a refusing proxy = %v, want a connection error", err)
	}
	p.Pass()
	c2 := dial(t, p.Addr())
	if got, err := roundTrip(c2, "ok", 5*time.Second); err != nil || got != "ok" {
		t.Fatalf("after Pass = %q, %v", got, err)
	}
}

func TestTargetDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	p := newProxy(t, addr)
	if err := tryRoundTrip(p.Addr()); err == nil || isTimeout(err) {
		t.Fatalf("round trip to a dead target = %v, want a connection error", err)
	}
}

func TestCloseEndsEverything(t *testing.T) {
	t.Parallel()
	p, err := tcpproxy.New("127.0.0.1:0", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p.Addr())
	if _, err := roundTrip(c, "x", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Error("the proxy still accepts after Close")
	}
}

// tryRoundTrip dials addr and round-trips one line; the proxy may reset during the dial or after it.
func tryRoundTrip(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = roundTrip(c, "x", 5*time.Second)
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
