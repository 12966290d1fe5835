package netstack_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"testing"
)

// TestHalfClose checks both directions of a TCP half-close: the side that
// calls CloseWrite can still read the whole reply, and the other side reads
// io.EOF after the data.
func TestHalfClose(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	a, b := newHost(t, n, "a"), newHost(t, n, "b")

	t.Run("ClientFirst", func(t *testing.T) {
		t.Parallel()
		// The server reads the request to EOF, then answers and closes.
		l := listen(t, b, "tcp", ":0")
		serve(t, l, func(c net.Conn) {
			req, err := io.ReadAll(c)
			if err != nil {
				t.Errorf("server read: %v", err)
				return
			}
			c.Write(append([]byte("reply to "), req...))
		})
		c, err := a.Dial("tcp", fmt.Sprintf("b:%d", port(l)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("request")); err != nil {
			t.Fatal(err)
		}
		if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("more")); !errors.Is(err, syscall.EPIPE) {
			t.Errorf("Write after CloseWrite: got %v, want EPIPE", err)
		}
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "reply to request" {
			t.Errorf("got %q", got)
		}
	})

	t.Run("CloseRead", func(t *testing.T) {
		t.Parallel()
		l := listen(t, b, "tcp", ":0")
		got := make(chan string, 1)
		serve(t, l, func(c net.Conn) {
			req, _ := io.ReadAll(c)
			got <- string(req)
		})
		c, err := a.Dial("tcp", fmt.Sprintf("b:%d", port(l)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.(interface{ CloseRead() error }).CloseRead(); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("Read after CloseRead: %d, %v; want io.EOF", n, err)
		}
		// Writing still works.
		c.Write([]byte("still writing"))
		c.(interface{ CloseWrite() error }).CloseWrite()
		if s := <-got; s != "still writing" {
			t.Errorf("server got %q", s)
		}
	})

	t.Run("ServerFirst", func(t *testing.T) {
		t.Parallel()
		// The server greets and half-closes, then reads the client's
		// answer to EOF and echoes its length.
		l := listen(t, b, "tcp", ":0")
		handled := make(chan struct{})
		serve(t, l, func(c net.Conn) {
			defer close(handled)
			c.Write([]byte("hello"))
			if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Errorf("server CloseWrite: %v", err)
			}
			got, err := io.ReadAll(c)
			if err != nil {
				t.Errorf("server read: %v", err)
			}
			if string(got) != "hi there" {
				t.Errorf("server got %q", got)
			}
		})
		c, err := a.Dial("tcp", fmt.Sprintf("b:%d", port(l)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "hello" {
			t.Fatalf("got %q, %v", got, err)
		}
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("second read at EOF: %v", err)
		}
		// The write side is still open.
		if _, err := c.Write([]byte("hi there")); err != nil {
			t.Fatal(err)
		}
		c.(interface{ CloseWrite() error }).CloseWrite()
		<-handled
	})
}

// TestNewHost checks explicit addresses and the errors of NewHost.
func TestNewHost(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	db4, db6 := netip.MustParseAddr("192.168.7.7"), netip.MustParseAddr("2001:db8::7")
	db, err := n.NewHost("db", db4, db6)
	if err != nil {
		t.Fatal(err)
	}
	if got := db.Addrs(); len(got) != 2 || got[0] != db4 || got[1] != db6 || db.Name() != "db" {
		t.Errorf("db is %v %v", db.Name(), got)
	}
	app := newHost(t, n, "app")
	l := listen(t, db, "tcp", ":5432")
	serve(t, l, func(c net.Conn) { c.Write([]byte("ok")) })
	for _, addr := range []string{"192.168.7.7:5432", "[2001:db8::7]:5432", "db:5432"} {
		c, err := app.Dial("tcp", addr)
		if err != nil {
			t.Errorf("dial %s: %v", addr, err)
			continue
		}
		c.Close()
	}

	for _, tc := range []struct {
		name  string
		addrs []netip.Addr
	}{
		{"db", nil},                  // name taken
		{"other", []netip.Addr{db4}}, // address taken
		{"", nil},                    // no name
		{"localhost", nil},           // reserved
		{"10.0.0.1", nil},            // an IP
		{"a b", nil},                 // not a name
		{"lo", []netip.Addr{netip.IPv6Loopback()}},
		{"zero", []netip.Addr{netip.IPv4Unspecified()}},
		{"bad", []netip.Addr{{}}},
	} {
		if h, err := n.NewHost(tc.name, tc.addrs...); err == nil {
			t.Errorf("NewHost(%q, %v) = %v, want an error", tc.name, tc.addrs, h)
		}
	}

	// A closed host frees its name and addresses.
	db.Close()
	if err := db.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := app.Dial("tcp", "db:5432"); err == nil {
		t.Error("dial a closed host: no error")
	}
	if _, err := n.NewHost("db", db4); err != nil {
		t.Errorf("reusing a closed host's name and address: %v", err)
	}
	n.Close()
	if _, err := n.NewHost("late"); err == nil {
		t.Error("NewHost on a closed network: no error")
	}
}

// TestHostClose checks what a closed host's peers and users see.
func TestHostClose(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	a, b := newHost(t, n, "a"), newHost(t, n, "b")
	l := listen(t, b, "tcp", ":0")
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	c, err := a.Dial("tcp", fmt.Sprintf("b:%d", port(l)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	defer s.Close()

	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()
	b.Close()
	if err := <-readErr; !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("peer's Read after its host closed: %v, want ECONNRESET", err)
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Error("Write on a closed host's conn: no error")
	}
	if _, err := b.Listen("tcp", ":0"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Listen on a closed host: %v", err)
	}
	if _, err := b.Dial("tcp", "a:1"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Dial from a closed host: %v", err)
	}
}

// TestHTTP runs an HTTP server in one host and a client in another, the
// Host's DialContext plugged into http.Transport.
func TestHTTP(t *testing.T) {
	t.Parallel()
	n := newNetwork(t)
	web, client := newHost(t, n, "web"), newHost(t, n, "client")
	l := listen(t, web, "tcp", ":80")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	defer func() {
		srv.Close()
		<-done
	}()
	tr := &http.Transport{DialContext: client.DialContext}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	for i := range 3 {
		resp, err := hc.Get(fmt.Sprintf("http://web/%d", i))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("hello /%d", i); !bytes.Equal(body, []byte(want)) {
			t.Errorf("got %q, want %q", body, want)
		}
	}
}
