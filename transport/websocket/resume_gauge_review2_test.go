package websocket

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spriteproxy/spriteproxy/dialer"
)

// TestResumeDetachedGaugeInconsistent: a detached tunnel that a resume
// with bad offsets ends for good is no longer detached:
// spriteproxy_tunnels_detached goes back to 0. (closeWith decrements
// only when r.final is nil, and resumeTunnel's failLocked sets it first,
// so the gauge stayed at 1 for ever.)
func TestResumeDetachedGaugeInconsistent(t *testing.T) {
	t.Parallel()
	srv := newServer()
	srv.Metrics = NewMetrics()
	ts, rl, d, tg := resumeSetup(t, srv, echo)
	nc, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rc := nc.(*ResumableConn)
	echoTrip(t, rc, "a")
	host, port, _ := dialer.SplitAddress("tcp", tg.addr())
	tok, _ := rc.tokenAndReceived()
	rl.setRefuse(true) // the client cannot come back itself
	rl.cut()
	detached := func() float64 { return testutil.ToFloat64(srv.Metrics.detached) }
	waitFor(t, "the tunnel detached", func() bool { return detached() == 1 })

	other := ts.dialer()
	other.DisableResume = false
	_, _, err = other.resumeDial(testCtx(t), "box", host, port, tok, 1<<40, "")
	var re *dialer.ResumeError
	if !errors.As(err, &re) || re.Reason != dialer.ResumeInconsistent {
		t.Fatalf("bad offsets = %v, want inconsistent", err)
	}
	waitLive(t, ts.Server, 0)
	if g := detached(); g != 0 {
		t.Errorf("spriteproxy_tunnels_detached = %v after the tunnel ended, want 0", g)
	}
}
