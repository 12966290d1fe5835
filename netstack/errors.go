package netstack

import (
	"context"
	"errors"
	"os"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// goError turns a gVisor error into the error a kernel socket would give, so
// that callers can match it with errors.Is against syscall.ECONNREFUSED and
// friends. No tcpip.Error leaves this package.
func goError(e tcpip.Error) error {
	switch e.(type) {
	case *tcpip.ErrConnectionRefused:
		return syscall.ECONNREFUSED
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET
	case *tcpip.ErrConnectionAborted, *tcpip.ErrAborted:
		return syscall.ECONNABORTED
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT
	case *tcpip.ErrNetworkUnreachable:
		return syscall.ENETUNREACH
	case *tcpip.ErrHostUnreachable, *tcpip.ErrNoNet:
		return syscall.EHOSTUNREACH
	case *tcpip.ErrHostDown:
		return syscall.EHOSTDOWN
	case *tcpip.ErrPortInUse:
		return syscall.EADDRINUSE
	case *tcpip.ErrBadLocalAddress, *tcpip.ErrNoPortAvailable:
		return syscall.EADDRNOTAVAIL
	case *tcpip.ErrClosedForSend:
		return syscall.EPIPE
	case *tcpip.ErrNotConnected:
		return syscall.ENOTCONN
	case *tcpip.ErrAlreadyConnected:
		return syscall.EISCONN
	case *tcpip.ErrInvalidEndpointState, *tcpip.ErrInvalidOptionValue:
		return syscall.EINVAL
	case *tcpip.ErrNoBufferSpace:
		return syscall.ENOBUFS
	case *tcpip.ErrMessageTooLong:
		return syscall.EMSGSIZE
	case *tcpip.ErrAddressFamilyNotSupported:
		return syscall.EAFNOSUPPORT
	}
	return errors.New("netstack: " + e.String())
}

// sysError is goError wrapped as the *os.SyscallError the net package puts
// in its *net.OpError values ("connect: connection refused").
func sysError(syscall string, e tcpip.Error) error {
	return os.NewSyscallError(syscall, goError(e))
}

// errDialTimeout is what a dial whose context deadline passed returns, inside
// a *net.OpError: a net.Error whose Timeout reports true, that also matches
// context.DeadlineExceeded and os.ErrDeadlineExceeded with errors.Is.
var errDialTimeout error = dialTimeoutError{}

type dialTimeoutError struct{}

func (dialTimeoutError) Error() string   { return "i/o timeout" }
func (dialTimeoutError) Timeout() bool   { return true }
func (dialTimeoutError) Temporary() bool { return true }
func (dialTimeoutError) Is(target error) bool {
	return target == context.DeadlineExceeded || target == os.ErrDeadlineExceeded
}

// ctxError maps the error of a done context to what a dial returns: a
// timeout for a passed deadline, the context's own error otherwise.
func ctxError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return errDialTimeout
	}
	return err
}
