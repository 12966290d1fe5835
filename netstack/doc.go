// Package netstack runs TCP/IP in memory: a Network links Hosts, each a
// gVisor userspace TCP/IP stack with its own addresses, so that services,
// clients and a whole tunnel chain can run in one process without any OS
// socket or port. Tests built on it run in parallel with no port
// collisions, and are not slowed by it: on a 2-core machine a bulk copy
// between two hosts ran 1-2x as fast as the OS's loopback TCP with 32-256
// KiB writes (0.5-1.2x with 4 KiB writes, where gVisor's per-segment cost
// shows), and a connection took about 1.3x as long to set up (see
// BenchmarkBulk and BenchmarkDial).
//
//	n := netstack.NewNetwork(nil)
//	defer n.Close()
//	db, _ := n.NewHost("db")   // 10.99.0.2 and fd00:99::2
//	app, _ := n.NewHost("app") // 10.99.0.3 and fd00:99::3
//
//	l, _ := db.Listen("tcp", ":5432")
//	go serve(l)
//
//	conn, err := app.DialContext(ctx, "tcp", "db:5432")
//	client := &http.Client{Transport: &http.Transport{DialContext: app.DialContext}}
//
// # Hosts
//
// A Host has a loopback interface (127.0.0.1, ::1, "localhost") and an
// interface on the network with the addresses given to NewHost, or one IPv4
// and one IPv6 address drawn from Options.IPv4Prefix and IPv6Prefix. Host
// names registered on the network resolve from every host; there is no other
// name resolution. Listen and DialContext take the net package's "tcp",
// "tcp4" and "tcp6" networks and behave as its functions do, and the conns
// they give behave as *net.TCPConn does: deadlines, CloseWrite (a TCP
// half-close), io.EOF after the peer's FIN, errors as *net.OpError values
// matching syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EPIPE or
// net.ErrClosed with errors.Is. No gVisor type or error reaches the caller.
//
// A dial to an address that no host owns fails at once with
// syscall.EHOSTUNREACH instead of waiting for SYN retries.
//
// # Sprites
//
// For spriteproxy, a host stands for a sprite: Network.ResolveSprite gives a
// server the host in which to dial a sprite's targets, and Network.Dialer is
// a dialer.Dialer that dials inside the named host directly, with no tunnel.
//
// # Performance and behaviour
//
// Packets are handed from one stack to the other in the sending goroutine,
// with no queue between them, so nothing is dropped when traffic outruns the
// receiver: the sender slows down, bounded by TCP's flow control. IP packets
// are up to 64 KiB, checksums are neither computed nor checked, SACK is on,
// and TCP buffers grow with use up to Options.BufferSize (4 MiB). RACK loss
// detection is off, since nothing is ever lost and its probe timer misfires
// at in-memory round-trip times; connections may reuse ports in TIME_WAIT.
//
// # Faults
//
// A host's link to the network can be made bad at run time, to test code
// against a slow, lossy or broken network without a real one:
//
//	app.SetConditions(netstack.Conditions{
//		Latency:   25 * time.Millisecond, // each way: 50 ms of round trip to db
//		Jitter:    5 * time.Millisecond,
//		Bandwidth: 1 << 20,               // bytes per second, each way
//		Loss:      0.01,
//		Seed:      1,                     // the same packets lost every run
//	})
//	app.Partition(2 * time.Second) // every packet dropped: only timeouts notice
//	app.Cut()                      // every connection across the link reset now
//
// Conditions apply to each packet on its way out of the host and again on
// its way in, so two hosts with conditions add up. Held-back packets wait
// in the receiving host's link, released in order by one goroutine per link
// that first has to hold one; Host.Close ends it and drops what it holds.
// Jitter never reorders packets. Host.FaultStats counts what the faults
// did. Between two perfect links (no conditions, no partition set) a
// packet costs two atomic loads more than it did before faults existed.
//
// The package starts no goroutine of its own but those delay lines. Each
// host's stack runs one TCP processor goroutine per CPU (GOMAXPROCS at
// NewHost), ended by Host.Close or Network.Close, which return once they
// have exited.
package netstack
