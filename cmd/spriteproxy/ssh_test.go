package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/testnet"
)

// A real ssh client reaches a real sshd through
// ProxyCommand='spriteproxy connect box localhost:PORT' and a serve
// process, and runs a command that hashes 4 MiB of stdin. sshd runs in
// inetd mode (-i), one process per connection of a listener on port 0, so
// no port is fixed. Needs Debian's openssh-server and openssh-client and,
// like TestRealServices, SPRITEPROXY_REAL_SERVICES=1 (see .ci/run).
func TestRealServiceSSH(t *testing.T) {
	if os.Getenv("SPRITEPROXY_REAL_SERVICES") != "1" {
		t.Skip("set SPRITEPROXY_REAL_SERVICES=1 to run a real ssh and sshd through connect (see .ci/run)")
	}
	t.Parallel()
	sshd, ssh, keygen := sshTool(t, "/usr/sbin/sshd"), sshTool(t, "ssh"), sshTool(t, "ssh-keygen")
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hostKey, clientKey := filepath.Join(dir, "host_key"), filepath.Join(dir, "client_key")
	for _, k := range []string{hostKey, clientKey} {
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", k).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	authorized := filepath.Join(dir, "authorized_keys")
	pub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(authorized, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "sshd_config")
	conf := fmt.Sprintf("HostKey %s\nAuthorizedKeysFile %s\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"+
		"KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nPidFile none\n", hostKey, authorized)
	if err := os.WriteFile(config, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // sshd's privilege separation directory
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln, func(c net.Conn) {
		defer c.Close()
		f, err := c.(*net.TCPConn).File()
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		cmd := exec.Command(sshd, "-i", "-e", "-f", config)
		cmd.Stdin, cmd.Stdout = f, f
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Logf("sshd -i: %v: %s", err, stderr.String())
		}
	})
	port := ln.Addr().(*net.TCPAddr).Port

	bin, _ := buildBinaries(t)
	_, api, ca := serveProcess(t, bin)
	proxyCommand := fmt.Sprintf("%s connect --tls-ca %s box localhost:%d", bin, ca, port)

	payload := bytes.Repeat([]byte("spriteproxy over ssh\n"), 200_000) // ~4 MiB
	want := sha256.Sum256(payload)
	cmd := exec.Command(ssh, "-F", "/dev/null", "-i", clientKey, "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "ProxyCommand="+proxyCommand, me.Username+"@box", "sha256sum")
	cmd.Env = append(connectEnv(), envToken+"="+testToken, envAPI+"="+api)
	cmd.Stdin = bytes.NewReader(payload)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(realServiceTimeout):
		cmd.Process.Kill()
		err = <-done
	}
	if err != nil {
		t.Fatalf("ssh: %v; stderr: %s", err, stderr.String())
	}
	if got := strings.Fields(stdout.String()); len(got) == 0 || got[0] != hex.EncodeToString(want[:]) {
		t.Errorf("sha256sum over ssh says %q, want %x", stdout.String(), want)
	}
	noToken(t, stdout.String(), stderr.String())
}

// sshTool finds an OpenSSH program or fails the test saying what to install.
func sshTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install openssh-server and openssh-client (see .ci/run)", name)
	}
	return p
}
