package rabbitmq

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pgoutbox/pgoutbox/internal/testenv"
)

// pipe returns a coalescing client end and the server end of a loopback TCP connection.
func pipe(t *testing.T) (*coalescingConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	if srv == nil {
		t.Fatal("accept failed")
	}
	cc := newCoalescingConn(c)
	t.Cleanup(func() { _ = cc.Close(); _ = srv.Close() })
	return cc, srv
}

// TestCoalescingConnKeepsEveryWriteWholeAndInOrder writes numbered records from several goroutines
// and reads them back: every record arrives whole, and each goroutine's records in its order.
func TestCoalescingConnKeepsEveryWriteWholeAndInOrder(t *testing.T) {
	t.Parallel()
	cc, srv := pipe(t)
	const writers, each = 8, 5000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := make([]byte, 64)
			for i := range each {
				binary.BigEndian.PutUint32(rec[0:], uint32(w))
				binary.BigEndian.PutUint32(rec[4:], uint32(i))
				copy(rec[8:], bytes.Repeat([]byte{byte(w + i)}, 56))
				if _, err := cc.Write(rec); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	next := make([]uint32, writers)
	rec := make([]byte, 64)
	_ = srv.SetReadDeadline(time.Now().Add(30 * time.Second))
	for range writers * each {
		if _, err := io.ReadFull(srv, rec); err != nil {
			t.Fatalf("read: %v", err)
		}
		w, i := binary.BigEndian.Uint32(rec[0:]), binary.BigEndian.Uint32(rec[4:])
		if w >= writers || i != next[w] || !bytes.Equal(rec[8:], bytes.Repeat([]byte{byte(int(w) + int(i))}, 56)) {
			t.Fatalf("record of writer %d number %d arrived where writer %d's number %d was due, or torn", w, i, w, next[min(w, writers-1)])
		}
		next[w]++
	}
	wg.Wait()
}

// TestCoalescingConnFailsAfterALostConnection: once a write to the socket fails, the connection is
// closed (so amqp091-go's reader ends) and later Writes return an error instead of queueing.
func TestCoalescingConnFailsAfterALostConnection(t *testing.T) {
	t.Parallel()
	cc, srv := pipe(t)
	_ = srv.(*net.TCPConn).SetLinger(0)
	_ = srv.Close() // the client's writes get a reset
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for err == nil && time.Now().Before(deadline) {
		_, err = cc.Write(make([]byte, 4096))
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		t.Fatal("writes kept succeeding on a connection reset by the peer")
	}
	if _, rerr := cc.Read(make([]byte, 1)); rerr == nil {
		t.Fatal("Read succeeded after the connection failed; want it closed")
	}
}

// TestCoalescingConnClose: Close is idempotent and a Write after it fails.
func TestCoalescingConnClose(t *testing.T) {
	t.Parallel()
	cc, _ := pipe(t)
	if err := cc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cc.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := cc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v, want net.ErrClosed", err)
	}
}

// TestCoalescingConnUnderTLS: amqp091-go runs TLS over the dialled connection (amqps://), so the
// handshake and the records go through the coalescing writer; data written both ways arrives.
func TestCoalescingConnUnderTLS(t *testing.T) {
	t.Parallel()
	cc, srv := pipe(t)
	cert, err := tls.LoadX509KeyPair(testenv.SelfSigned(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	server := tls.Server(srv, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	client := tls.Client(cc, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // a test's self-signed certificate
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(server, buf); err != nil {
			done <- err
			return
		}
		_, err := server.Write(append(buf, '!'))
		done <- err
	}()
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatalf("write through TLS: %v", err)
	}
	got := make([]byte, 6)
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "hello!" {
		t.Fatalf("read %q, %v; want \"hello!\"", got, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
}
