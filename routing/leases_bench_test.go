package routing

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchSubnet leaves room for MaxLeases clients, so that 10,000 existing
// leases plus a chunk of new ones fit.
var benchSubnet = netip.MustParsePrefix("100.64.0.0/10")

// writeBenchLeases writes a leases file with n leases (the first n client
// addresses of benchSubnet) to path, as a long-running server would have.
func writeBenchLeases(b *testing.B, path string, n int) {
	b.Helper()
	p, err := NewPool(benchSubnet)
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	f := leaseFile{Version: LeasesVersion, Subnet: p.Subnet()}
	for i := range n {
		f.Leases = append(f.Leases, leaseEntry{
			Identity:      fmt.Sprintf("CN=client-%06d,O=Example Corp", i),
			Addr:          addOffset(p.first, uint64(i)),
			FirstAssigned: t0,
			LastAssigned:  t0.Add(time.Duration(i) * time.Second),
		})
	}
	data, err := json.MarshalIndent(&f, "", "  ")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		b.Fatal(err)
	}
}

// openBenchPool opens a Pool on a copy of the leases file base, with real
// fsyncs unless fakeSync (then only the fsyncs are counted), and returns it
// with its fsync counter.
func openBenchPool(b *testing.B, base string, fakeSync bool) (*Pool, *atomic.Int64) {
	b.Helper()
	data, err := os.ReadFile(base)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "leases.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	p, warnings, err := OpenPool(benchSubnet, path)
	if err != nil || len(warnings) > 0 {
		b.Fatalf("OpenPool: %v, %v", err, warnings)
	}
	syncs := new(atomic.Int64)
	p.syncFile = func(f *os.File) error {
		syncs.Add(1)
		if fakeSync {
			return nil
		}
		return f.Sync()
	}
	return p, syncs
}

// BenchmarkOpenPoolAssignNew measures Assign of new identities on a Pool
// that already holds 10,000 leases, with 1, 10 and 200 concurrent callers,
// each with a real temporary directory and with real or fake fsyncs (fake
// separates the cost of the fsyncs from that of encoding and writing the
// file). ns/op is the time per new identity; ids/s is its inverse;
// fsyncs/id is 2 (file and directory) without batching.
//
// The pool is reopened (untimed) from the 10,000-lease file every
// chunk identities, so that the file the writes cost stays near 10,000
// leases however large b.N grows.
func BenchmarkOpenPoolAssignNew(b *testing.B) {
	const existing, chunk = 10_000, 1_000
	base := filepath.Join(b.TempDir(), "base.json")
	writeBenchLeases(b, base, existing)
	for _, fsync := range []string{"real", "fake"} {
		for _, callers := range []int{1, 10, 200} {
			b.Run(fmt.Sprintf("fsync=%s/callers=%d", fsync, callers), func(b *testing.B) {
				var ids, syncsTotal int64
				for ids < int64(b.N) {
					b.StopTimer()
					p, syncs := openBenchPool(b, base, fsync == "fake")
					n := min(int64(b.N)-ids, chunk)
					var next atomic.Int64
					var wg sync.WaitGroup
					b.StartTimer()
					for range callers {
						wg.Go(func() {
							for {
								i := next.Add(1) - 1
								if i >= n {
									return
								}
								id := fmt.Sprintf("CN=new-%d-%d", ids, i)
								if _, err := p.Assign(id); err != nil {
									b.Error(err)
									return
								}
							}
						})
					}
					wg.Wait()
					b.StopTimer()
					ids += n
					syncsTotal += syncs.Load()
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ids/s")
				b.ReportMetric(float64(syncsTotal)/float64(b.N), "fsyncs/id")
			})
		}
	}
}

// BenchmarkLeasesWrite measures one write of a leases file with 10,000
// leases (Flush after a reconnect changed a last-assigned time), with real
// or fake fsyncs.
func BenchmarkLeasesWrite(b *testing.B) {
	const existing = 10_000
	base := filepath.Join(b.TempDir(), "base.json")
	writeBenchLeases(b, base, existing)
	for _, fsync := range []string{"real", "fake"} {
		b.Run("fsync="+fsync, func(b *testing.B) {
			p, _ := openBenchPool(b, base, fsync == "fake")
			clock := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
			p.now = func() time.Time { return clock }
			for i := 0; b.Loop(); i++ {
				clock = clock.Add(time.Second)
				if _, err := p.Assign(fmt.Sprintf("CN=client-%06d,O=Example Corp", i%existing)); err != nil {
					b.Fatal(err)
				}
				if err := p.Flush(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLeasesEncode measures the parts of a write of 10,000 leases
// that use the CPU: the snapshot taken under mu, the sort, and encoding.
func BenchmarkLeasesEncode(b *testing.B) {
	const existing = 10_000
	base := filepath.Join(b.TempDir(), "base.json")
	writeBenchLeases(b, base, existing)
	p, _ := openBenchPool(b, base, true)
	b.Run("snapshot", func(b *testing.B) {
		for b.Loop() {
			p.writeMu.Lock()
			p.mu.Lock()
			p.snapshotLocked(nil, "")
			p.mu.Unlock()
			p.writeMu.Unlock()
		}
	})
	entries := slices.Clone(p.snapshotLocked(nil, ""))
	b.Run("sort", func(b *testing.B) {
		for b.Loop() {
			p.sortEntries(entries)
		}
	})
	entries = slices.Clone(p.sortEntries(entries))
	b.Run("encode", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			var err error
			if buf, err = appendLeaseFile(buf[:0], p.Subnet(), entries); err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(int64(len(buf)))
	})
	b.Run("encode-json", func(b *testing.B) {
		f := &leaseFile{Version: LeasesVersion, Subnet: p.Subnet(), Leases: entries}
		for b.Loop() {
			if _, err := json.MarshalIndent(f, "", "  "); err != nil {
				b.Fatal(err)
			}
		}
	})
}
