package main

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/spriteproxy/spriteproxy/internal/testnet"
)

// connectMiB is the size of each direction of TestProcessConnectPipe.
const connectMiB = 64

// stream is n pseudo-random bytes from seed.
func stream(seed byte, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{seed}), n)
}

// sum is the SHA-256 of what r yields.
func sum(t *testing.T, r io.Reader) [sha256.Size]byte {
	t.Helper()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, r, make([]byte, 64<<10)); err != nil {
		t.Error(err)
	}
	var s [sha256.Size]byte
	copy(s[:], h.Sum(nil))
	return s
}

// 64 MiB each way through "spriteproxy connect" and a serve process,
// checked by SHA-256. The service reads the whole request before it
// replies, so the reply comes back only if stdin's end went through as a
// half-close and not as a close; stdout carries the reply and nothing else.
func TestProcessConnectPipe(t *testing.T) {
	t.Parallel()
	bin, _ := buildBinaries(t)
	_, api, ca := serveProcess(t, bin)

	const n = connectMiB << 20
	got := make(chan [sha256.Size]byte, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testnet.Serve(t, ln, func(c net.Conn) {
		defer c.Close()
		got <- sum(t, c)
		if _, err := io.Copy(c, stream(2, n)); err != nil {
			t.Error(err)
		}
	})
	port := ln.Addr().(*net.TCPAddr).Port

	cmd := exec.Command(bin, "connect", "--tls-ca", ca, "box", "localhost:"+strconv.Itoa(port))
	cmd.Env = append(connectEnv(), envToken+"="+testToken, envAPI+"="+api)
	cmd.Stdin = stream(1, n)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reply := sum(t, out)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("connect: %v; stderr: %q", err, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr: %q", stderr.String())
	}
	if want := sum(t, stream(1, n)); <-got != want {
		t.Error("the service received other bytes than stdin held")
	}
	if want := sum(t, stream(2, n)); reply != want {
		t.Error("stdout holds other bytes than the service sent")
	}
}

// A refused target: exit 1, one line on stderr, nothing on stdout, no token.
func TestProcessConnectRefused(t *testing.T) {
	t.Parallel()
	bin, _ := buildBinaries(t)
	_, api, ca := serveProcess(t, bin)
	port := testnet.HoldPort(t, 0)

	cmd := exec.Command(bin, "connect", "--tls-ca", ca, "box", "localhost:"+strconv.Itoa(port))
	cmd.Env = append(connectEnv(), envToken+"="+testToken, envAPI+"="+api)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit %d (%v), want 1", code, err)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout: %q", stdout.String())
	}
	if s := stderr.String(); strings.Count(s, "\n") != 1 || !strings.HasPrefix(s, "spriteproxy connect: ") {
		t.Errorf("stderr is not one line: %q", s)
	}
	noToken(t, stdout.String(), stderr.String())
}

// connectEnv is the test's environment less SPRITEPROXY_*.
func connectEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SPRITEPROXY_") {
			env = append(env, kv)
		}
	}
	return env
}
