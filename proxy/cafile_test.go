package proxy_test

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// childEnv names the child program the test binary runs as (TestMain),
// for tests of what New reads from the environment: t.Setenv cannot be
// used by parallel tests.
const childEnv = "SPRITEPROXY_TEST_CHILD"

// childMain runs the child program name and returns its exit status; it
// prints what the parent checks.
func childMain(name string) int {
	switch name {
	case "cafile":
		// GET / of the sprite's port 8080, through the API of $API.
		c := proxy.New(testToken, proxy.WithBaseURL(os.Getenv("API")), proxy.WithProxy(websocket.NoProxy))
		defer c.CloseIdleConnections()
		conn, err := c.Sprite(testSprite).ProxySocket(context.Background(), "tcp", "localhost:8080")
		if err != nil {
			var ce *proxy.CAFileError
			fmt.Printf("error: CAFileError=%v notexist=%v: %v\n", errors.As(err, &ce), errors.Is(err, fs.ErrNotExist), err)
			return 1
		}
		defer conn.Close()
		fmt.Fprint(conn, "GET / HTTP/1.0\r\n\r\n")
		b, _ := io.ReadAll(conn)
		fmt.Printf("reply: %s\n", b)
		return 0
	}
	fmt.Printf("unknown child %q\n", name)
	return 2
}

// runChild runs childMain(name) in a process with env added.
func runChild(t *testing.T, name string, env ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), append(env, childEnv+"="+name)...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// New trusts the certificates of SPRITEPROXY_CA_FILE: a self-signed server
// is reached without code; a file that cannot be used is a *CAFileError
// naming it, on every tunnel.
func TestCAFileFromEnvironment(t *testing.T) {
	t.Parallel()
	srv := newTestServer(true)
	defer srv.Close()
	srv.ServeHTTP(8080, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello through a trusted CA")
	}))
	dir := t.TempDir()
	caFile := filepath.Join(dir, "cert.pem")
	cert := srv.hs.Certificate()
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, file string
		code       int
		want       string
	}{
		{"trusted", caFile, 0, "hello through a trusted CA"},
		{"unset", "", 1, "certificate signed by unknown authority"},
		{"missing", filepath.Join(dir, "nope.pem"), 1, "CAFileError=true notexist=true: dial tcp my-sprite/localhost:8080: proxy: SPRITEPROXY_CA_FILE=" + filepath.Join(dir, "nope.pem")},
		{"not PEM", notPEM, 1, "CAFileError=true notexist=false"},
	} {
		code, out := runChild(t, "cafile", "API="+srv.URL, proxy.EnvCAFile+"="+tc.file)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d: %q; want %d and %q", tc.name, code, out, tc.code, tc.want)
		}
	}
}
