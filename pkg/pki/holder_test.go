package pki

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

func issue(t *testing.T, ca *CA, name string) *Identity {
	t.Helper()
	id, err := ca.IssueShort(name, time.Hour, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// echo serves lines back on a loopback listener until the test ends.
func echo(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

func roundTrip(t *testing.T, c *tls.Conn, r *bufio.Reader, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		t.Fatal(err)
	}
	got, err := r.ReadString('\n')
	if err != nil || got != msg+"\n" {
		t.Fatalf("echo of %q: %q, %v", msg, got, err)
	}
}

// A renewed identity is presented from the next connection on, and a
// connection made before goes on.
func TestHolderRenewsWithoutDroppingConnections(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	server, client := &Holder{}, &Holder{}
	server.Set(issue(t, ca, "node:a"))
	client.Set(issue(t, ca, "controller"))
	addr := echo(t, server.ServerTLS())

	old, err := tls.Dial("tcp", addr, client.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	oldR := bufio.NewReader(old)
	roundTrip(t, old, oldR, "before")
	oldSerial := old.ConnectionState().PeerCertificates[0].SerialNumber

	server.Set(issue(t, ca, "node:a"))
	client.Set(issue(t, ca, "controller"))
	roundTrip(t, old, oldR, "after the renewal, on the old connection")

	fresh, err := tls.Dial("tcp", addr, client.ClientTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	roundTrip(t, fresh, bufio.NewReader(fresh), "new connection")
	if fresh.ConnectionState().PeerCertificates[0].SerialNumber.Cmp(oldSerial) == 0 {
		t.Fatal("a new connection got the server's old certificate")
	}
}

func TestHolderRefusesWithoutIdentityOrCA(t *testing.T) {
	ca, _ := NewCA("test CA")
	stranger, _ := NewCA("another CA")
	server := &Holder{}
	addr := echo(t, server.ServerTLS())
	client := &Holder{}
	client.Set(issue(t, ca, "controller"))
	dial := func() error {
		c, err := tls.Dial("tcp", addr, client.ClientTLS())
		if err == nil {
			defer c.Close()
			_, err = c.Write([]byte("x\n"))
			if err == nil {
				_, err = bufio.NewReader(c).ReadString('\n')
			}
		}
		return err
	}
	if dial() == nil {
		t.Fatal("a server with no identity yet completed a handshake")
	}
	server.Set(issue(t, stranger, "node:a"))
	if dial() == nil {
		t.Fatal("the client accepted a server from another CA")
	}
	server.Set(issue(t, ca, "node:a"))
	if err := dial(); err != nil {
		t.Fatalf("same CA: %v", err)
	}
	client.Set(issue(t, stranger, "controller"))
	if dial() == nil {
		t.Fatal("the server accepted a client from another CA")
	}
}

// Keep renews at two thirds of the life left, and retries a failure.
func TestKeepRenews(t *testing.T) {
	ca, _ := NewCA("test CA")
	var calls atomic.Int32
	h := &Holder{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Keep(ctx, h, "controller", func(context.Context) (*Identity, error) {
		if calls.Add(1) == 2 {
			return nil, net.ErrClosed // a passing failure: retried
		}
		return ca.IssueShort("controller", 2*time.Second)
	})
	seen := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d certificates in 30 s of 2 s ones (%d obtains)", len(seen), calls.Load())
		}
		if id := h.Current(); id != nil {
			seen[id.Cert.Leaf.SerialNumber.String()] = true
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRenewAt(t *testing.T) {
	ca, _ := NewCA("test CA")
	id, err := ca.IssueShort("controller", 6*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got := time.Now()
	at := RenewAt(id, got)
	left := id.Cert.Leaf.NotAfter.Sub(got)
	if d := at.Sub(got); d < left*2/3-time.Second || d > left*2/3+time.Second {
		t.Fatalf("renews %s after receipt; %s is two thirds of %s", d, left*2/3, left)
	}
}
