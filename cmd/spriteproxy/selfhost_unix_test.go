//go:build unix

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadmeSelfHosting runs the two shell blocks of README.md's
// self-hosting section as written, read from README.md so that the text
// and the test cannot drift: the first (certificate, token, serve) in one
// shell, the second (the environment, forward) in another, in the same
// directory, with the spriteproxy just built first on PATH. Only the ports
// differ: 127.0.0.1:8443 becomes a free port (port 0, then the one serve
// reports), and 5432 an echo service's. It needs bash and openssl, which
// .ci/run has; without them it fails under SPRITEPROXY_REAL_SERVICES=1 and
// is skipped otherwise.
func TestReadmeSelfHosting(t *testing.T) {
	t.Parallel()
	var tools []string
	for _, name := range []string{"bash", "openssl"} {
		p, err := exec.LookPath(name)
		if err != nil {
			if os.Getenv("SPRITEPROXY_REAL_SERVICES") == "1" {
				t.Fatalf("%s is needed: %v", name, err)
			}
			t.Skipf("%s is not installed: %v", name, err)
		}
		tools = append(tools, p)
	}
	bash := tools[0]

	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Self-hosting the server with TLS\n")
	if !ok {
		t.Fatal(`README.md has no "## Self-hosting the server with TLS" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	blocks := regexp.MustCompile("(?s)\n```sh\n(.*?)```\n").FindAllStringSubmatch(section, -1)
	if len(blocks) < 2 {
		t.Fatalf("the self-hosting section has %d sh blocks, want the server's and the client's", len(blocks))
	}
	server, client := blocks[0][1], blocks[1][1]
	for _, want := range []string{"--listen 127.0.0.1:8443", "DNS:localhost,IP:127.0.0.1"} {
		if !strings.Contains(server, want) {
			t.Fatalf("the server block does not say %q:\n%s", want, server)
		}
	}
	for _, want := range []string{"https://127.0.0.1:8443", " 0:5432"} {
		if !strings.Contains(client, want) {
			t.Fatalf("the client block does not say %q:\n%s", want, client)
		}
	}

	bin, _ := buildBinaries(t)
	dir := t.TempDir()
	env := []string{"PATH=" + filepath.Dir(bin) + string(os.PathListSeparator) + os.Getenv("PATH")}
	srv := startShell(t, dir, env, bash, strings.ReplaceAll(server, "127.0.0.1:8443", "127.0.0.1:0"))
	m := srv.stderr.waitFor(t, serveAddrRE, time.Minute)
	addr := m[1]

	port := echoService(t)
	script := strings.ReplaceAll(client, "127.0.0.1:8443", addr)
	script = strings.ReplaceAll(script, " 0:5432", fmt.Sprintf(" 0:%d", port))
	fwd := startShell(t, dir, env, bash, script)
	m = fwd.stdout.waitFor(t, regexp.MustCompile(`^(\S+) -> my-sprite:\d+\n`), time.Minute)
	roundTrip(t, m[1], 1<<16)

	for _, p := range []*process{fwd, srv} {
		if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(t, 30*time.Second); code != 0 {
			t.Errorf("%s: exit %d; stderr:\n%s", p.cmd.Args[2], code, p.stderr.String())
		}
	}
	// The token the README's commands made appears in no output.
	token, err := os.ReadFile(filepath.Join(dir, "token"))
	if err != nil || len(strings.TrimSpace(string(token))) < 32 {
		t.Fatalf("token file: %q, %v", token, err)
	}
	for _, out := range []string{srv.stdout.String(), srv.stderr.String(), fwd.stdout.String(), fwd.stderr.String()} {
		if strings.Contains(out, strings.TrimSpace(string(token))) {
			t.Errorf("the token leaked: %q", out)
		}
	}
}

// startShell runs script with bash -c in dir, in a process group of its
// own (so that a signal reaches the command it runs), with the test's
// environment less SPRITEPROXY_* plus env. The group is killed at the end
// of the test if it is still running.
func startShell(t *testing.T, dir string, env []string, bash, script string) *process {
	t.Helper()
	cmd := exec.Command(bash, "-c", script)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return runProcess(t, cmd, env, "SPRITEPROXY_", func(p *process) { syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) }, "PATH=")
}

// TestReadmeModuleBeforePublishing follows README.md's instructions for
// using the unpublished module from a checkout, as written there (read
// from README.md), with the checkout at this repository instead of
// ../spriteproxy: the replace directive (its sh block) and the go work
// line, each in a new module holding the quick start, which must then
// build. The module cache stands in for the network (GOPROXY=off,
// GOSUMDB=off): this repository's own dependencies are all it needs.
func TestReadmeModuleBeforePublishing(t *testing.T) {
	t.Parallel()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skipf("bash is not installed: %v", err)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go is not on PATH: %v", err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Library quick start\n")
	if !ok {
		t.Fatal(`README.md has no "## Library quick start" section`)
	}
	replaceBlock := regexp.MustCompile("(?s)\n```sh\n(.*?)```\n").FindStringSubmatch(section)
	goWork := regexp.MustCompile("`(go work init [^`]*)`").FindStringSubmatch(section)
	if replaceBlock == nil || !strings.Contains(replaceBlock[1], "-replace=") || goWork == nil {
		t.Fatalf("the quick start section has no replace block or go work line:\n%s", section[:min(len(section), 1500)])
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	program, err := os.ReadFile("internal/quickstart/main.go")
	if err != nil {
		t.Fatal(err)
	}

	for _, steps := range []string{replaceBlock[1], goWork[1]} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "main.go"), program, 0o600); err != nil {
			t.Fatal(err)
		}
		script := "set -e\n" + goTool + " mod init example.com/myprogram\n" +
			strings.ReplaceAll(steps, "../spriteproxy", root) + "\n" +
			goTool + " build -o /dev/null .\n"
		cmd := exec.Command(bash, "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOPROXY=off", "GOSUMDB=off", "GOFLAGS=", "GOWORK=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", steps, err, out)
		}
	}
}
