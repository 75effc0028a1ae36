package netnstest

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

func TestNewCleanup(t *testing.T) {
	var name string
	t.Run("create", func(t *testing.T) {
		n := New(t)
		name = n.Name
		if !strings.HasPrefix(n.Name, Prefix) {
			t.Errorf("Name = %q, want prefix %q", n.Name, Prefix)
		}
		if out := listNetns(t); !strings.Contains(out, n.Name) {
			t.Errorf("ip netns list = %q, want it to contain %s", out, n.Name)
		}
		lo, err := n.Handle().LinkByName("lo")
		if err != nil {
			t.Fatalf("LinkByName(lo): %v", err)
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("lo in %s is down, want up", n.Name)
		}
		if out := n.Run(t, "ip", "-o", "link", "show"); strings.Count(out, "\n") != 1 {
			t.Errorf("fresh netns has links other than lo:\n%s", out)
		}
	})
	if name == "" {
		t.Skip("subtest skipped")
	}
	if out := listNetns(t); strings.Contains(out, name) {
		t.Errorf("netns %s still listed after its test ended:\n%s", name, out)
	}
}

func listNetns(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	return string(out)
}

func TestVethPing(t *testing.T) {
	tests := []struct {
		name         string
		aAddr, bAddr string
	}{
		{name: "ipv4", aAddr: "198.18.0.1/24", bAddr: "198.18.0.2/24"},
		{name: "ipv6", aAddr: "fd00:18::1/64", bAddr: "fd00:18::2/64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := New(t), New(t)
			if _, err := exec.LookPath("ping"); err != nil {
				t.Fatalf("ping not installed (apt-get install -y iputils-ping): %v", err)
			}
			aAddr, bAddr := netip.MustParsePrefix(tt.aAddr), netip.MustParsePrefix(tt.bAddr)
			aIf, bIf := Veth(t, a, aAddr, b, bAddr)
			if len(aIf) > 15 || len(bIf) > 15 || aIf == bIf {
				t.Fatalf("Veth names %q, %q: want distinct names of at most 15 bytes", aIf, bIf)
			}
			if _, err := a.Handle().LinkByName(aIf); err != nil {
				t.Errorf("%s not in %s: %v", aIf, a.Name, err)
			}
			if _, err := b.Handle().LinkByName(bIf); err != nil {
				t.Errorf("%s not in %s: %v", bIf, b.Name, err)
			}
			// -w bounds the whole run; ping exits 0 on the first reply.
			a.Run(t, "ping", "-n", "-c", "1", "-w", "10", bAddr.Addr().String())
			b.Run(t, "ping", "-n", "-c", "1", "-w", "10", aAddr.Addr().String())
		})
	}
}

func TestListenDial(t *testing.T) {
	a, b := New(t), New(t)
	Veth(t, a, netip.MustParsePrefix("198.18.1.1/24"), b, netip.MustParsePrefix("198.18.1.2/24"))

	l := b.Listen(t, "tcp", "198.18.1.2:0")
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Write([]byte("echo " + line))
	}()

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("hello\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "echo hello\n" {
		t.Fatalf("read = %q, %v; want %q", got, err, "echo hello\n")
	}

	// a has a loopback of its own, with nothing listening on it.
	if _, err := a.Dial(ctx, "tcp", "127.0.0.1:1"); err == nil {
		t.Errorf("dial 127.0.0.1:1 in %s succeeded, want refused", a.Name)
	}
}

func TestDoRestoresNamespace(t *testing.T) {
	n := New(t)
	host, err := threadNetns()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()

	var inside []string
	if err := n.Do(func() error {
		var err error
		inside, err = interfaceNames()
		return err
	}); err != nil {
		t.Fatalf("Do: %v", err)
	}
	if strings.Join(inside, ",") != "lo" {
		t.Errorf("interfaces inside %s = %v, want [lo]", n.Name, inside)
	}
	for range 20 {
		if err := n.Do(func() error { return nil }); err != nil {
			t.Fatalf("Do: %v", err)
		}
	}
	// Threads released by Do go back to the scheduler; every thread must
	// be in the original namespace.
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			ns, err := threadNetns()
			if err != nil {
				t.Error(err)
				return
			}
			defer ns.Close()
			if !ns.Equal(host) {
				t.Errorf("thread in netns %v, want the original %v", ns, host)
			}
		})
	}
	wg.Wait()
}

// threadNetns returns the network namespace of the calling goroutine's
// current OS thread.
func threadNetns() (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return netns.Get()
}

func interfaceNames() ([]string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return names, nil
}
