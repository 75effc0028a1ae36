package netnstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace this package creates, so that
// leftovers are easy to spot: `ip netns list | grep ^tvt-`.
const Prefix = "tvt-"

// NS is a network namespace created by New for one test. Its methods are
// safe for concurrent use.
type NS struct {
	// Name is the namespace name, as used by `ip netns` and `ip -n`.
	Name string

	// Immutable after New; closed by the cleanup New registers.
	fd     netns.NsHandle
	handle *netlink.Handle
}

// New creates a fresh network namespace named Prefix + random hex, sets
// its loopback up, and registers a t.Cleanup that closes the handles and
// deletes the namespace. Devices in the namespace (veth ends, TUN devices)
// are destroyed with it. Processes still running in the namespace are not
// killed; the kernel frees the namespace when the last one exits.
//
// New skips the test if the process is not root, and fails it if the
// namespace cannot be created.
func New(t testing.TB) *NS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netnstest: creating network namespaces requires root; run the tests as root (e.g. sudo go test)")
	}
	name := Prefix + randomHex(t, 4)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	n := &NS{Name: name, fd: -1}
	t.Cleanup(func() {
		if n.handle != nil {
			n.handle.Close()
		}
		if n.fd.IsOpen() {
			n.fd.Close()
		}
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v\n%s", name, err, out)
		}
	})

	fd, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	n.fd = fd
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		t.Fatalf("open netlink handle in netns %s: %v", name, err)
	}
	n.handle = h
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatalf("find lo in netns %s: %v", name, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatalf("set lo up in netns %s: %v", name, err)
	}
	return n
}

// Handle returns a netlink handle inside the namespace. It is owned by n
// and closed in the test's cleanup; do not close it.
func (n *NS) Handle() *netlink.Handle { return n.handle }

// Cmd returns an unstarted command that runs name with args inside the
// namespace (`ip netns exec <Name> name args...`), killed when ctx is done.
func (n *NS) Cmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs name with args inside the namespace to completion and returns
// its combined output. It fails the test, showing the output, if the
// command fails. It must be called from the test goroutine.
func (n *NS) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Cmd(t.Context(), name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("in netns %s: %s %s: %v\n%s", n.Name, name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Do calls fn on a new goroutine whose locked OS thread is switched into
// the namespace, and returns fn's error. Sockets created by fn stay in the
// namespace after Do returns and may be used from any goroutine. Goroutines
// started by fn do not run in the namespace, and fn must not call
// t.FailNow (it does not run on the test goroutine).
//
// If the thread cannot be switched back, it is discarded rather than
// returned to the Go scheduler.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.fd); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", n.Name, err)
			return
		}
		defer func() {
			// Unlocking only after a successful restore; otherwise the
			// thread exits with this goroutine.
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
		}()
		errc <- fn()
	}()
	return <-errc
}

// Listen listens on addr inside the namespace and closes the listener in
// the test's cleanup. It fails the test on error.
func (n *NS) Listen(t testing.TB, network, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("in netns %s: listen %s %s: %v", n.Name, network, addr, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// Dial connects to addr from inside the namespace. The caller closes the
// connection.
func (n *NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("in netns %s: dial %s %s: %w", n.Name, network, addr, err)
	}
	return c, nil
}

// Veth connects a and b with a veth pair: one end in a with address aAddr,
// the other in b with bAddr, both up. IPv6 addresses are added with nodad
// so they are usable at once. It returns the interface names, which are
// unique (fit IFNAMSIZ). The pair disappears with either namespace; it is
// also deleted in the test's cleanup. Veth fails the test on error.
func Veth(t testing.TB, a *NS, aAddr netip.Prefix, b *NS, bAddr netip.Prefix) (aIf, bIf string) {
	t.Helper()
	id := randomHex(t, 4)
	aIf, bIf = "tvv"+id+"a", "tvv"+id+"b"
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.CommandContext(t.Context(), "ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ip("-n", a.Name, "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	t.Cleanup(func() {
		// Deleting one end deletes the pair; already gone is fine.
		l, err := a.handle.LinkByName(aIf)
		if err != nil {
			return
		}
		if err := a.handle.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			t.Errorf("delete veth %s in netns %s: %v", aIf, a.Name, err)
		}
	})
	for _, end := range []struct {
		ns   *NS
		ifn  string
		addr netip.Prefix
	}{{a, aIf, aAddr}, {b, bIf, bAddr}} {
		args := []string{"-n", end.ns.Name, "addr", "add", end.addr.String(), "dev", end.ifn}
		if end.addr.Addr().Is6() {
			args = append(args, "nodad")
		}
		ip(args...)
		ip("-n", end.ns.Name, "link", "set", end.ifn, "up")
	}
	return aIf, bIf
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random name: %v", err)
	}
	return hex.EncodeToString(b)
}
