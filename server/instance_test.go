package server

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"tlsvpn/routing"
)

// TestLockStateDir: a second instance with the same state directory is
// refused with a message naming the first; once the first lets go, the
// directory can be taken again.
func TestLockStateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	first, err := lockStateDir(dir, "tunneld0")
	if err != nil {
		t.Fatalf("first lock: %v", err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir: %v, %v; want mode 0700", fi, err)
	}
	second, err := lockStateDir(dir, "tunneld1")
	if err == nil {
		second.Close()
		t.Fatal("second lock of the same state dir succeeded")
	}
	want := "--state-dir " + dir + " is in use by tunneld --tun tunneld0 (pid " + strconv.Itoa(os.Getpid()) + ")"
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "its own --state-dir") {
		t.Errorf("second lock: %v\nwant it to say %q and what to do", err, want)
	}
	first.Close()
	third, err := lockStateDir(dir, "tunneld1")
	if err != nil {
		t.Fatalf("lock after the first let go: %v", err)
	}
	third.Close()
}

// TestMigrateLeases: the default instance takes over the leases an older
// tunneld kept in the shared directory, once, and never overwrites its own.
func TestMigrateLeases(t *testing.T) {
	root := t.TempDir()
	to := filepath.Join(root, "tunneld0")
	os.Mkdir(to, 0o700)
	for _, name := range []string{"leases.json", "leases.json.journal", "leases6.json"} {
		os.WriteFile(filepath.Join(root, name), []byte("old "+name), 0o600)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if err := migrateLeases(root, to, log); err != nil {
		t.Fatalf("migrateLeases: %v", err)
	}
	for _, name := range []string{"leases.json", "leases.json.journal", "leases6.json"} {
		if b, err := os.ReadFile(filepath.Join(to, name)); err != nil || string(b) != "old "+name {
			t.Errorf("%s after migration: %q, %v", name, b, err)
		}
		if _, err := os.Stat(filepath.Join(root, name)); err == nil {
			t.Errorf("%s still in the shared directory", name)
		}
	}
	if !strings.Contains(logs.String(), "moved the leases") {
		t.Errorf("no log line for the migration:\n%s", logs.String())
	}
	// Leases in the shared directory again (an older tunneld ran once
	// more): the instance keeps its own.
	os.WriteFile(filepath.Join(root, "leases.json"), []byte("older"), 0o600)
	if err := migrateLeases(root, to, log); err != nil {
		t.Fatalf("second migrateLeases: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(to, "leases.json")); string(b) != "old leases.json" {
		t.Errorf("the instance's leases were overwritten: %q", b)
	}
}

func TestRefusal(t *testing.T) {
	used := routing.InUse{Ifname: "tunneld0", Prefix: netip.MustParsePrefix("100.64.0.1/24")}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&routing.ConflictError{Ifname: "tunneld1", PID: 7, Command: "tunneld"},
			"--tun tunneld1: interface tunneld1 already exists (its TUN device is held by tunneld, pid 7): another instance (or another program) uses this name; give each instance its own --tun"},
		{&routing.ConflictError{Ifname: "tunneld1", Subnet: netip.MustParsePrefix("100.64.0.0/24"), Used: used},
			"--subnet 100.64.0.0/24: tunnel subnet 100.64.0.0/24 overlaps the address 100.64.0.1/24 on tunneld0: the same addresses would be on two interfaces; pick a subnet no interface uses"},
		{&routing.ConflictError{Ifname: "tunneld1", Subnet: netip.MustParsePrefix("fd00:64::/64"), Used: routing.InUse{Ifname: "eth0", Prefix: netip.MustParsePrefix("fd00:64::/64"), Route: true}},
			"--subnet6 fd00:64::/64: tunnel subnet fd00:64::/64 overlaps the route fd00:64::/64 on eth0"},
	} {
		if got := refusal("tunneld1", tc.err).Error(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("refusal = %q\nwant %q", got, tc.want)
		}
	}
}
