package routing

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolvConfSavesOriginal(t *testing.T) {
	servers := []netip.Addr{netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("fd00:64::1")}
	for _, old := range [][]byte{
		nil,
		[]byte("nameserver 192.0.2.53\n"),
		bytes.Repeat([]byte("search example.com\nnameserver 192.0.2.53\noptions edns0 trust-ad\n"), 20),
	} {
		b := resolvConfContent("tunnelc0", servers, old)
		if !strings.Contains(string(b), "\nnameserver 100.64.0.1\nnameserver fd00:64::1\n") {
			t.Errorf("content lacks the servers:\n%s", b)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if len(line) > 100 {
				t.Errorf("line of %d bytes (resolvers may cut long lines)", len(line))
			}
			if line != "" && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "nameserver ") {
				t.Errorf("unexpected non-comment line %q", line)
			}
		}
		got, ours, err := savedResolvConf(b)
		if !ours || err != nil || !bytes.Equal(got, old) {
			t.Errorf("savedResolvConf = %q, %v, %v; want %q", got, ours, err, old)
		}
	}
	if _, ours, _ := savedResolvConf([]byte("nameserver 192.0.2.53\n")); ours {
		t.Error("a foreign resolv.conf is taken for ours")
	}
	if _, ours, err := savedResolvConf([]byte(resolvMarker + "x\n" + resolvSaved + "!!!\n")); !ours || err == nil {
		t.Errorf("corrupt saved content: ours %v, err %v; want ours and an error", ours, err)
	}
}

// TestRestoreResolvConf: what --cleanup does after a crash.
func TestRestoreResolvConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	saved := ResolvConf
	ResolvConf = path
	t.Cleanup(func() { ResolvConf = saved })

	if ok, err := RestoreResolvConf("tunnelc0"); ok || err != nil {
		t.Fatalf("no file: RestoreResolvConf = %v, %v", ok, err)
	}
	orig := []byte("nameserver 192.0.2.53\n")
	os.WriteFile(path, orig, 0o644)
	if ok, err := RestoreResolvConf("tunnelc0"); ok || err != nil {
		t.Fatalf("foreign file: RestoreResolvConf = %v, %v; want it left alone", ok, err)
	}
	// Another instance's file, while its interface exists (lo stands in
	// for a running tunnelc's TUN): left alone.
	live := resolvConfContent("lo", []netip.Addr{netip.MustParseAddr("100.64.0.1")}, orig)
	os.WriteFile(path, live, 0o644)
	if ok, err := RestoreResolvConf("tunnelc0"); ok || err != nil {
		t.Fatalf("a running instance's file: RestoreResolvConf = %v, %v; want it left alone", ok, err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, live) {
		t.Fatalf("a running instance's file changed to %q", b)
	}
	// This instance's file, and the file of an instance that is gone.
	for _, writer := range []string{"tunnelc0", "tvt-gone0"} {
		os.WriteFile(path, resolvConfContent(writer, []netip.Addr{netip.MustParseAddr("100.64.0.1")}, orig), 0o644)
		if ok, err := RestoreResolvConf("tunnelc0"); !ok || err != nil {
			t.Fatalf("file of %s: RestoreResolvConf = %v, %v", writer, ok, err)
		}
		if b, _ := os.ReadFile(path); !bytes.Equal(b, orig) {
			t.Fatalf("file of %s: restored %q, want %q", writer, b, orig)
		}
	}
}
