package routing

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// leaseText renders p's leases as sorted "addr identity" lines.
func leaseText(p *Pool) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var lines []string
	for id, l := range p.byID {
		lines = append(lines, fmt.Sprintf("%v %s", l.addr, id))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// dirNames returns the names in dir, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// checkLeaseFiles checks that the directory of path holds the snapshot
// path and its journal, and nothing else (no temporary files), and that
// the journal holds whole batches only.
func checkLeaseFiles(t *testing.T, path string) {
	t.Helper()
	dir := filepath.Dir(path)
	if got, want := dirNames(t, dir), []string{filepath.Base(path), filepath.Base(path) + journalSuffix}; !slices.Equal(got, want) {
		t.Errorf("files in %s = %q, want %q", dir, got, want)
	}
	data, err := os.ReadFile(path + journalSuffix)
	if err != nil {
		t.Fatal(err)
	}
	if _, n, err := parseJournal(data); err != nil || n != len(data) {
		t.Errorf("journal %q: whole batches span %d of %d bytes, %v; want all", data, n, len(data), err)
	}
}

func mustOpenPool(t *testing.T, subnet, path string) *Pool {
	t.Helper()
	p, warnings, err := OpenPool(netip.MustParsePrefix(subnet), path)
	if err != nil {
		t.Fatalf("OpenPool(%s, %s): %v", subnet, path, err)
	}
	if len(warnings) > 0 {
		t.Fatalf("OpenPool(%s, %s) warnings: %v", subnet, path, warnings)
	}
	// These tests read the files after each write: they compact at once.
	// TestBackgroundCompaction covers compactions in the background.
	p.syncCompaction = true
	return p
}

func mustAssign(t *testing.T, p *Pool, identity, want string) {
	t.Helper()
	got, err := p.Assign(identity)
	if err != nil || got.String() != want {
		t.Fatalf("Assign(%q) = %v, %v; want %s", identity, got, err, want)
	}
}

// countSyncs makes p count its fsyncs (two per file write).
func countSyncs(p *Pool) *int {
	n := new(int)
	p.syncFile = func(f *os.File) error {
		*n++
		return f.Sync()
	}
	return n
}

func TestLeasesReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "leases.json")
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	clock := t0

	p := mustOpenPool(t, "100.64.0.0/24", path)
	if runtime.GOOS != "windows" {
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("leases directory: %v, %v; want mode 0700", fi.Mode(), err)
		}
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Contains(got, []byte(`"leases": []`)) {
		t.Errorf("OpenPool did not create an empty leases file: %q, %v", got, err)
	}
	p.now = func() time.Time { return clock }
	syncs := countSyncs(p)
	mustAssign(t, p, "alice", "100.64.0.2")
	mustAssign(t, p, "bob", "100.64.0.3")
	if err := p.Reserve("dave", netip.MustParseAddr("100.64.0.4")); err != nil {
		t.Fatalf("Reserve(dave): %v", err)
	}
	mustAssign(t, p, "carol", "100.64.0.5")
	if *syncs != 4 {
		t.Errorf("4 new leases made %d fsyncs, want 4 (an append to the journal per lease)", *syncs)
	}
	clock = t0.Add(time.Hour)
	mustAssign(t, p, "alice", "100.64.0.2") // reconnect: no write
	if err := p.Reserve("dave", netip.MustParseAddr("100.64.0.4")); err != nil {
		t.Fatalf("Reserve(dave) again: %v", err)
	}
	if *syncs != 4 {
		t.Errorf("existing leases made %d fsyncs, want none", *syncs-4)
	}
	checkLeaseFiles(t, path)
	if runtime.GOOS != "windows" {
		for _, file := range []string{path, path + journalSuffix} {
			if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v, %v; want mode 0600", file, fi.Mode(), err)
			}
		}
	}
	want := leaseText(p)

	// Reopen, as a restarted server would.
	q := mustOpenPool(t, "100.64.0.0/24", path)
	if got := leaseText(q); got != want {
		t.Errorf("reopened leases:\n%s\nwant:\n%s", got, want)
	}
	if l := q.byID["alice"]; !l.first.Equal(t0) || !l.last.Equal(t0) {
		t.Errorf("alice reopened before Flush: first %v, last %v; want %v, %v (last-assigned is saved lazily)", l.first, l.last, t0, t0)
	}
	mustAssign(t, q, "bob", "100.64.0.3")
	mustAssign(t, q, "erin", "100.64.0.6") // new identity: next free, no collision
	if err := q.Reserve("frank", netip.MustParseAddr("100.64.0.3")); !errors.Is(err, ErrAddrInUse) {
		t.Errorf("Reserve(frank, bob's loaded address) = %v, want ErrAddrInUse", err)
	}

	// Flush saves last-assigned times, and only when they changed.
	clock = t0.Add(2 * time.Hour)
	q.now = func() time.Time { return clock }
	syncs = countSyncs(q)
	mustAssign(t, q, "alice", "100.64.0.2")
	if err := q.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if err := q.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if *syncs != 3 {
		t.Errorf("two Flushes after one reconnect made %d fsyncs, want 3 (one compaction: snapshot, directory, emptied journal)", *syncs)
	}
	if fi, err := os.Stat(path + journalSuffix); err != nil || fi.Size() != 0 {
		t.Errorf("journal after Flush: %v, %v; want it empty", fi, err)
	}
	r := mustOpenPool(t, "100.64.0.0/24", path)
	if l := r.byID["alice"]; !l.first.Equal(t0) || !l.last.Equal(clock) {
		t.Errorf("alice after Flush: first %v, last %v; want %v, %v", l.first, l.last, t0, clock)
	}
	if got, want := leaseText(r), leaseText(q); got != want {
		t.Errorf("reopened leases:\n%s\nwant:\n%s", got, want)
	}
}

// TestLeasesFileFormat pins the formats of the journal, after a new
// lease, and of the snapshot, after Flush compacts.
func TestLeasesFileFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	p := mustOpenPool(t, "fd00:64::/120", path)
	p.now = func() time.Time { return time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC) }
	mustAssign(t, p, "CN=alice", "fd00:64::2")
	if _, err := p.Pin("bob", netip.MustParseAddr("fd00:64::9")); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name     string
		do       func() error
		snapshot string
		journal  string
	}{
		{
			name: "after Assign and Pin",
			do:   func() error { return nil },
			snapshot: `{
  "version": 1,
  "subnet": "fd00:64::/120",
  "leases": []
}
`,
			journal: `{"op":"add","identity":"CN=alice","addr":"fd00:64::2","at":"2026-05-01T10:00:00Z"}
{"op":"commit","gen":0,"entries":1}
{"op":"pin","identity":"bob","addr":"fd00:64::9","at":"2026-05-01T10:00:00Z"}
{"op":"commit","gen":0,"entries":1}
`,
		},
		{
			name: "after Flush",
			do:   p.Flush,
			snapshot: `{
  "version": 1,
  "subnet": "fd00:64::/120",
  "generation": 1,
  "leases": [
    {
      "identity": "CN=alice",
      "addr": "fd00:64::2",
      "first_assigned": "2026-05-01T10:00:00Z",
      "last_assigned": "2026-05-01T10:00:00Z"
    },
    {
      "identity": "bob",
      "addr": "fd00:64::9",
      "first_assigned": "2026-05-01T10:00:00Z",
      "last_assigned": "2026-05-01T10:00:00Z"
    }
  ]
}
`,
		},
		{
			name: "after another Assign",
			do: func() error {
				_, err := p.Assign("carol")
				return err
			},
			snapshot: "", // unchanged
			journal: `{"op":"add","identity":"carol","addr":"fd00:64::3","at":"2026-05-01T10:00:00Z"}
{"op":"commit","gen":1,"entries":1}
`,
		},
	}
	var snapshot string
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if st.snapshot != "" {
			snapshot = st.snapshot
		}
		for _, f := range []struct{ path, want string }{{path, snapshot}, {path + journalSuffix, st.journal}} {
			if got, err := os.ReadFile(f.path); err != nil || string(got) != f.want {
				t.Errorf("%s: %s:\n%s\nwant:\n%s", st.name, f.path, got, f.want)
			}
		}
	}
}

func TestLeasesWriteFailure(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "leases.json")
	p := mustOpenPool(t, "100.64.0.0/24", path)
	mustAssign(t, p, "alice", "100.64.0.2")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	// The fsync of the temporary file fails: the disk is full or gone.
	errDisk := errors.New("simulated I/O error")
	p.syncFile = func(*os.File) error { return errDisk }
	if a, err := p.Assign("bob"); !errors.Is(err, errDisk) {
		t.Fatalf("Assign(bob) with failing fsync = %v, %v; want %v", a, err, errDisk)
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, before) {
		t.Errorf("leases file after failed write = %q, %v; want unchanged %q", got, err, before)
	}
	checkLeaseFiles(t, path)
	if a, ok := p.Lookup("bob"); ok {
		t.Errorf("Lookup(bob) after failed Assign = %v, true; want no lease", a)
	}
	if err := p.Reserve("carol", netip.MustParseAddr("100.64.0.9")); !errors.Is(err, errDisk) {
		t.Errorf("Reserve(carol) with failing fsync = %v, want %v", err, errDisk)
	}
	if got := p.Len(); got != 1 {
		t.Errorf("Len() after failed writes = %d, want 1", got)
	}
	mustAssign(t, p, "alice", "100.64.0.2") // existing leases need no write

	// Once the disk recovers, bob gets the address the failed Assign chose.
	p.syncFile = (*os.File).Sync
	mustAssign(t, p, "bob", "100.64.0.3")
	q := mustOpenPool(t, "100.64.0.0/24", path)
	if got, want := leaseText(q), "100.64.0.2 alice\n100.64.0.3 bob"; got != want {
		t.Errorf("reopened leases:\n%s\nwant:\n%s", got, want)
	}
}

func TestLeasesUnwritableDir(t *testing.T) {
	if runtime.GOOS == "windows" || os.Geteuid() == 0 {
		t.Skip("directory permissions do not stop this user; TestLeasesWriteFailure covers write failures")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "leases.json")
	p := mustOpenPool(t, "100.64.0.0/24", path)
	mustAssign(t, p, "alice", "100.64.0.2")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	// The journal is a file of its own: new leases are still appended to
	// it, but a compaction, which writes a new snapshot next to it, fails,
	// and loses nothing.
	mustAssign(t, p, "bob", "100.64.0.3")
	if err := p.Flush(); err == nil {
		t.Fatalf("Flush in read-only directory = nil, want error")
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, before) {
		t.Errorf("leases file after failed write = %q, %v; want unchanged %q", got, err, before)
	}
	mustAssign(t, p, "alice", "100.64.0.2")
	mustAssign(t, p, "carol", "100.64.0.4")
	if q := mustOpenPool(t, "100.64.0.0/24", path); leaseText(q) != leaseText(p) {
		t.Errorf("reopened leases:\n%s\nwant:\n%s", leaseText(q), leaseText(p))
	}

	// A missing leases file that cannot be created stops OpenPool.
	if _, _, err := OpenPool(netip.MustParsePrefix("100.64.0.0/24"), filepath.Join(dir, "other.json")); err == nil {
		t.Errorf("OpenPool in read-only directory = nil error, want error")
	}
}

func TestLeasesCorrupt(t *testing.T) {
	tests := []struct {
		name    string
		content string
		corrupt bool // want *CorruptLeasesError; else another error
	}{
		{name: "empty", content: "", corrupt: true},
		{name: "truncated", content: `{"version": 1, "subnet": "100.64.0.0/24", "leases": [{"identity": "alice", "addr": "100.6`, corrupt: true},
		{name: "not json", content: "alice 100.64.0.2\n", corrupt: true},
		{name: "trailing garbage", content: `{"version": 1, "subnet": "100.64.0.0/24", "leases": []} x`, corrupt: true},
		{name: "missing version", content: `{"subnet": "100.64.0.0/24", "leases": []}`, corrupt: true},
		{name: "bad subnet", content: `{"version": 1, "subnet": "100.64.0.0/99", "leases": []}`, corrupt: true},
		{name: "bad address", content: `{"version": 1, "subnet": "100.64.0.0/24", "leases": [{"identity": "alice", "addr": "100.64.0.300"}]}`, corrupt: true},
		{name: "missing address", content: `{"version": 1, "subnet": "100.64.0.0/24", "leases": [{"identity": "alice"}]}`, corrupt: true},
		{name: "empty identity", content: `{"version": 1, "subnet": "100.64.0.0/24", "leases": [{"identity": "", "addr": "100.64.0.2"}]}`, corrupt: true},
		{name: "bad time", content: `{"version": 1, "subnet": "100.64.0.0/24", "leases": [{"identity": "alice", "addr": "100.64.0.2", "first_assigned": "yesterday"}]}`, corrupt: true},
		{name: "newer version", content: `{"version": 2, "subnet": "100.64.0.0/24", "pools": {}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "leases.json")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			p, _, err := OpenPool(netip.MustParsePrefix("100.64.0.0/24"), path)
			if err == nil {
				t.Fatalf("OpenPool(%q) = %v, nil; want error", tt.content, leaseText(p))
			}
			var ce *CorruptLeasesError
			if errors.As(err, &ce) != tt.corrupt {
				t.Errorf("OpenPool(%q) = %v; want CorruptLeasesError %v", tt.content, err, tt.corrupt)
			}
			if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "remove") || !strings.Contains(msg, "new addresses") {
				t.Errorf("OpenPool(%q) = %q; want the path and what to do", tt.content, msg)
			}
			if got, err := os.ReadFile(path); err != nil || string(got) != tt.content {
				t.Errorf("leases file after OpenPool = %q, %v; want it untouched", got, err)
			}
		})
	}
}

func TestLeasesLoad(t *testing.T) {
	// Leases written for 100.64.0.0/24, plus hand-made mistakes.
	const file = `{
  "version": 1,
  "subnet": "100.64.0.0/24",
  "future_field": true,
  "leases": [
    {"identity": "network", "addr": "100.64.0.0"},
    {"identity": "server", "addr": "100.64.0.1"},
    {"identity": "alice", "addr": "100.64.0.2"},
    {"identity": "bob", "addr": "100.64.0.3"},
    {"identity": "mallory", "addr": "100.64.0.3"},
    {"identity": "alice", "addr": "100.64.0.4"},
    {"identity": "carol", "addr": "100.64.0.127"},
    {"identity": "dave", "addr": "100.64.0.200"},
    {"identity": "broadcast", "addr": "100.64.0.255"},
    {"identity": "v6", "addr": "fd00::2"},
    {"identity": "mapped", "addr": "::ffff:100.64.0.5"}
  ]
}`
	tests := []struct {
		name         string
		subnet       string
		want         string // leaseText after load
		wantWarnings []string
		wantNext     string // address for a new identity
	}{
		{
			name:   "same subnet",
			subnet: "100.64.0.0/24",
			want:   "100.64.0.127 carol\n100.64.0.2 alice\n100.64.0.200 dave\n100.64.0.3 bob",
			wantWarnings: []string{
				`dropping lease of 100.64.0.0 to "network": not a client address of 100.64.0.0/24`,
				`dropping lease of 100.64.0.1 to "server": not a client address of 100.64.0.0/24`,
				`dropping lease of 100.64.0.3 to "mallory": address already leased to "bob"`,
				`dropping lease of 100.64.0.4 to "alice": identity already holds 100.64.0.2`,
				`dropping lease of 100.64.0.255 to "broadcast": not a client address of 100.64.0.0/24`,
				`dropping lease of fd00::2 to "v6": not a client address of 100.64.0.0/24`,
				`dropping lease of ::ffff:100.64.0.5 to "mapped": not a client address of 100.64.0.0/24`,
			},
			wantNext: "100.64.0.4",
		},
		{
			name:   "smaller subnet",
			subnet: "100.64.0.0/25",
			want:   "100.64.0.2 alice\n100.64.0.3 bob",
			wantWarnings: []string{
				`subnet changed from 100.64.0.0/24 to 100.64.0.0/25; keeping the leases inside 100.64.0.0/25`,
				`dropping lease of 100.64.0.0 to "network": not a client address of 100.64.0.0/25`,
				`dropping lease of 100.64.0.1 to "server": not a client address of 100.64.0.0/25`,
				`dropping lease of 100.64.0.3 to "mallory": address already leased to "bob"`,
				`dropping lease of 100.64.0.4 to "alice": identity already holds 100.64.0.2`,
				`dropping lease of 100.64.0.127 to "carol": not a client address of 100.64.0.0/25`, // the new broadcast address
				`dropping lease of 100.64.0.200 to "dave": not a client address of 100.64.0.0/25`,
				`dropping lease of 100.64.0.255 to "broadcast": not a client address of 100.64.0.0/25`,
				`dropping lease of fd00::2 to "v6": not a client address of 100.64.0.0/25`,
				`dropping lease of ::ffff:100.64.0.5 to "mapped": not a client address of 100.64.0.0/25`,
			},
			wantNext: "100.64.0.4",
		},
		{
			name:   "larger subnet",
			subnet: "100.64.0.0/23",
			want:   "100.64.0.127 carol\n100.64.0.2 alice\n100.64.0.200 dave\n100.64.0.255 broadcast\n100.64.0.3 bob",
			wantWarnings: []string{
				`subnet changed from 100.64.0.0/24 to 100.64.0.0/23; keeping the leases inside 100.64.0.0/23`,
				`dropping lease of 100.64.0.0 to "network": not a client address of 100.64.0.0/23`,
				`dropping lease of 100.64.0.1 to "server": not a client address of 100.64.0.0/23`,
				`dropping lease of 100.64.0.3 to "mallory": address already leased to "bob"`,
				`dropping lease of 100.64.0.4 to "alice": identity already holds 100.64.0.2`,
				`dropping lease of fd00::2 to "v6": not a client address of 100.64.0.0/23`,
				`dropping lease of ::ffff:100.64.0.5 to "mapped": not a client address of 100.64.0.0/23`,
			},
			wantNext: "100.64.0.4",
		},
		{
			name:   "other family",
			subnet: "fd00::/120",
			want:   "fd00::2 v6",
			wantWarnings: []string{
				`subnet changed from 100.64.0.0/24 to fd00::/120; keeping the leases inside fd00::/120`,
				`dropping lease of 100.64.0.0 to "network": not a client address of fd00::/120`,
				`dropping lease of 100.64.0.1 to "server": not a client address of fd00::/120`,
				`dropping lease of 100.64.0.2 to "alice": not a client address of fd00::/120`,
				`dropping lease of 100.64.0.3 to "bob": not a client address of fd00::/120`,
				`dropping lease of 100.64.0.3 to "mallory": not a client address of fd00::/120`,
				`dropping lease of 100.64.0.4 to "alice": not a client address of fd00::/120`,
				`dropping lease of 100.64.0.127 to "carol": not a client address of fd00::/120`,
				`dropping lease of 100.64.0.200 to "dave": not a client address of fd00::/120`,
				`dropping lease of 100.64.0.255 to "broadcast": not a client address of fd00::/120`,
				`dropping lease of ::ffff:100.64.0.5 to "mapped": not a client address of fd00::/120`,
			},
			wantNext: "fd00::3",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "leases.json")
			if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
				t.Fatal(err)
			}
			p, warnings, err := OpenPool(netip.MustParsePrefix(tt.subnet), path)
			if err != nil {
				t.Fatalf("OpenPool: %v", err)
			}
			if got := leaseText(p); got != tt.want {
				t.Errorf("loaded leases:\n%s\nwant:\n%s", got, tt.want)
			}
			var got []string
			for _, w := range warnings {
				got = append(got, strings.TrimPrefix(w.Error(), "leases file "+path+": "))
			}
			if !slices.Equal(got, tt.wantWarnings) {
				t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.wantWarnings, "\n"))
			}
			// Loading alone does not rewrite the file, so undoing a
			// mistaken subnet change loses nothing.
			if got, err := os.ReadFile(path); err != nil || string(got) != file {
				t.Errorf("leases file rewritten by OpenPool: %q, %v", got, err)
			}
			// The next new lease skips the loaded ones and rewrites the
			// file with the leases that were kept.
			mustAssign(t, p, "new", tt.wantNext)
			q := mustOpenPool(t, tt.subnet, path)
			if got, want := leaseText(q), leaseText(p); got != want {
				t.Errorf("reopened leases:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestLeasesConcurrent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "leases.json")
	p := mustOpenPool(t, "fd00:64::/118", path)
	const workers, identities = 8, 30
	strides := [workers]int{1, 7, 11, 13, 17, 19, 23, 29}
	results := make([][]netip.Addr, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			res := make([]netip.Addr, identities)
			for i := range identities {
				id := (i*strides[w] + w) % identities // a permutation per worker
				a, err := p.Assign(fmt.Sprintf("client-%d", id))
				if err != nil {
					t.Errorf("Assign(client-%d): %v", id, err)
					return
				}
				res[id] = a
			}
			results[w] = res
		})
	}
	// Reconnects and lookups of existing leases run alongside.
	wg.Go(func() {
		for i := range 200 {
			p.Lookup(fmt.Sprintf("client-%d", i%identities))
			p.Len()
		}
	})
	wg.Go(func() {
		if err := p.Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
	})
	wg.Wait()
	if t.Failed() {
		return
	}
	seen := map[netip.Addr]bool{}
	for id := range identities {
		for w := 1; w < workers; w++ {
			if results[w][id] != results[0][id] {
				t.Errorf("client-%d got %v in worker 0 but %v in worker %d", id, results[0][id], results[w][id], w)
			}
		}
		if seen[results[0][id]] {
			t.Errorf("%v leased twice", results[0][id])
		}
		seen[results[0][id]] = true
	}
	q := mustOpenPool(t, "fd00:64::/118", path)
	if got, want := leaseText(q), leaseText(p); got != want || q.Len() != identities {
		t.Errorf("reopened leases:\n%s\nwant %d leases:\n%s", got, identities, want)
	}
	checkLeaseFiles(t, path)
}

// TestLeasesKill9 kills a process that is assigning addresses as fast as it
// can, and checks that the leases files it leaves are complete and hold
// every lease the process handed out: with appends to the journal only,
// with a compaction after every other lease, so that the kill may land in
// one, and with compactions in the background (a tiny compactMin) while
// appends go on.
func TestLeasesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process")
	}
	for _, mode := range []string{"append", "compact", "background"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "leases.json")
			cmd := exec.Command(os.Args[0], "-test.run=^TestLeasesKill9Child$")
			cmd.Env = append(os.Environ(), "ROUTING_LEASES_CHILD="+path, "ROUTING_LEASES_CHILD_MODE="+mode)
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			handedOut := map[string]string{} // identity -> address
			sc := bufio.NewScanner(out)
			for len(handedOut) < 40 && sc.Scan() {
				id, addr, ok := strings.Cut(sc.Text(), " ")
				if !ok {
					t.Errorf("child: %s", sc.Text())
					continue
				}
				handedOut[id] = addr
			}
			cmd.Process.Kill() // SIGKILL: the child is in the middle of an Assign
			cmd.Wait()
			if len(handedOut) < 40 {
				t.Fatalf("child handed out %d addresses before it stopped, want 40", len(handedOut))
			}

			p := mustOpenPool(t, "100.64.0.0/20", path)
			for id, addr := range handedOut {
				if got, ok := p.Lookup(id); !ok || got.String() != addr {
					t.Errorf("after kill -9: Lookup(%s) = %v, %v; want %s", id, got, ok, addr)
				}
			}
			checkLeaseFiles(t, path) // stale temporary files removed, the journal's incomplete batch cut off
		})
	}
}

// TestLeasesKill9Child is TestLeasesKill9's child process: it assigns
// addresses until it is killed, printing each one once Assign returns; in
// mode "compact" it Flushes (compacts) after every other one, and in mode
// "background" it compacts in the background whenever the journal is as
// large as the snapshot.
func TestLeasesKill9Child(t *testing.T) {
	path := os.Getenv("ROUTING_LEASES_CHILD")
	if path == "" {
		t.Skip("run by TestLeasesKill9")
	}
	p, _, err := OpenPool(netip.MustParsePrefix("100.64.0.0/20"), path)
	if err != nil {
		fmt.Println(err)
		return
	}
	compact := os.Getenv("ROUTING_LEASES_CHILD_MODE") == "compact"
	if os.Getenv("ROUTING_LEASES_CHILD_MODE") == "background" {
		p.compactMin = 256
	}
	for i := 0; ; i++ {
		id := fmt.Sprintf("client-%d", i)
		a, err := p.Assign(id)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(id, a)
		if compact && i%2 == 1 {
			if err := p.Flush(); err != nil {
				fmt.Println(err)
				return
			}
		}
	}
}
