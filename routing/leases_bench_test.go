package routing

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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
// that already holds 100 or 10,000 leases, with 1, 10 and 200 concurrent
// callers, each with a real temporary directory and with real or fake
// fsyncs (fake separates the cost of the fsyncs from that of encoding and
// writing). ns/op is the time per new identity; ids/s is its inverse;
// cpu-ns/id the CPU time (user and system, all threads) per new identity;
// fsyncs/id the fsyncs per new identity, and B/id the bytes written (to
// any file) per new identity.
//
// The pool is reopened (untimed) from the file of existing leases every
// tenth of their number (at least 100) of new identities, so that the pool
// stays near its size however large b.N grows. A reopened pool starts with
// an empty journal, which those new identities do not fill up to the
// compaction bound (the snapshot's size): BenchmarkLeasesWrite measures
// a compaction, and what it adds to each new identity.
func BenchmarkOpenPoolAssignNew(b *testing.B) {
	for _, existing := range []int{100, 10_000} {
		chunk := int64(max(existing/10, 100))
		base := filepath.Join(b.TempDir(), "base.json")
		writeBenchLeases(b, base, existing)
		for _, fsync := range []string{"real", "fake"} {
			for _, callers := range []int{1, 10, 200} {
				b.Run(fmt.Sprintf("leases=%d/fsync=%s/callers=%d", existing, fsync, callers), func(b *testing.B) {
					var ids, syncsTotal, bytesTotal int64
					var cpu time.Duration
					for ids < int64(b.N) {
						b.StopTimer()
						p, syncs := openBenchPool(b, base, fsync == "fake")
						wchar0, cpu0 := wchar(), cpuTime()
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
						cpu += cpuTime() - cpu0
						ids += n
						syncsTotal += syncs.Load()
						bytesTotal += wchar() - wchar0
					}
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ids/s")
					b.ReportMetric(float64(syncsTotal)/float64(b.N), "fsyncs/id")
					if cpu > 0 {
						b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/id")
					}
					if bytesTotal > 0 {
						b.ReportMetric(float64(bytesTotal)/float64(b.N), "B/id")
					}
				})
			}
		}
	}
}

// wchar returns the bytes this process has passed to write calls so far
// (wchar of /proc/self/io), or 0 where that is not known.
func wchar() int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// BenchmarkLeasesWrite measures one compaction of 10,000 leases (Flush
// after a reconnect changed a last-assigned time), with real or fake
// fsyncs. A pool compacts once its journal is as large as its snapshot,
// which takes ids/compaction new identities if each comes alone (batches
// of several take more, as they share a commit line): amortized-ns/id is
// what compactions add to each of them, at most.
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
			// The journal batch of one new identity like those in the
			// snapshot.
			one, err := appendJournalRecord(nil, opAdd, fmt.Sprintf("CN=client-%06d,O=Example Corp", existing), lease{addr: addOffset(p.first, existing), first: clock})
			if err != nil {
				b.Fatal(err)
			}
			one = appendJournalCommit(one, p.gen, 1)
			perCompaction := float64(p.snapLen) / float64(len(one))
			b.ReportMetric(perCompaction, "ids/compaction")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/perCompaction, "amortized-ns/id")
		})
	}
}

// BenchmarkOpenPoolReplay measures OpenPool, as at a restart, of 10,000
// leases: all in the snapshot, and with a journal of 10,000 more in
// batches of one, about as much as the journal holds before a compaction.
func BenchmarkOpenPoolReplay(b *testing.B) {
	const existing = 10_000
	base := filepath.Join(b.TempDir(), "base.json")
	writeBenchLeases(b, base, existing)
	for _, journal := range []int{0, existing} {
		b.Run(fmt.Sprintf("journal=%d", journal), func(b *testing.B) {
			p, _ := openBenchPool(b, base, true)
			p.compactMin = 1 << 40
			for i := range journal {
				if _, err := p.Assign(fmt.Sprintf("CN=new-%06d,O=Example Corp", i)); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				q, warnings, err := OpenPool(benchSubnet, p.path)
				if err != nil || len(warnings) > 0 || q.Len() != existing+journal {
					b.Fatalf("OpenPool: %v, %v, %d leases", err, warnings, q.Len())
				}
				q.journal.Close()
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
			p.snapshotLocked()
			p.mu.Unlock()
			p.writeMu.Unlock()
		}
	})
	entries := slices.Clone(p.snapshotLocked())
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
			if buf, err = appendLeaseFile(buf[:0], p.Subnet(), 7, entries); err != nil {
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
