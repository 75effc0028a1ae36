package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// dist summarizes durations in milliseconds.
type dist struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

func summarize(ds []time.Duration) dist {
	if len(ds) == 0 {
		return dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	// Nearest rank: the smallest sample with at least q of all at or below it.
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		return ms(s[max(i, 0)])
	}
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return dist{N: len(s), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: ms(s[len(s)-1]), Mean: ms(sum / time.Duration(len(s)))}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// procSnap is what /proc says about one process.
type procSnap struct {
	PID        int     `json:"pid,omitempty"`
	RSSKiB     int64   `json:"rss_kib,omitempty"`
	HWMKiB     int64   `json:"hwm_kib,omitempty"` // peak RSS since the process started
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	FDs        int     `json:"fds,omitempty"`
	Threads    int     `json:"threads,omitempty"`
	Err        string  `json:"error,omitempty"`
}

func (p procSnap) ok() bool { return p.PID > 0 && p.Err == "" }

// clkTck is USER_HZ, the unit of utime and stime in /proc/PID/stat. The
// kernel fixes it at 100 for user space on every architecture Linux
// supports today; reading sysconf(_SC_CLK_TCK) would need cgo.
const clkTck = 100

// readProc reads RSS, peak RSS, CPU time, open descriptors and threads of
// pid from /proc. /proc is shared by network namespaces, so a generator in
// the client's namespace sees the server in the other.
func readProc(pid int) procSnap {
	p := procSnap{PID: pid}
	base := "/proc/" + strconv.Itoa(pid)
	status, err := os.ReadFile(base + "/status")
	if err != nil {
		p.Err = err.Error()
		return p
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			p.RSSKiB = n
		case "VmHWM":
			p.HWMKiB = n
		case "Threads":
			p.Threads = int(n)
		}
	}
	stat, err := os.ReadFile(base + "/stat")
	if err != nil {
		p.Err = err.Error()
		return p
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields that follow start after its last ')'. Field 3 is then
	// rest[0], so utime (field 14) is rest[11] and stime rest[12].
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 {
		rest := strings.Fields(string(stat[i+1:]))
		if len(rest) > 12 {
			ut, _ := strconv.ParseUint(rest[11], 10, 64)
			st, _ := strconv.ParseUint(rest[12], 10, 64)
			p.CPUSeconds = float64(ut+st) / clkTck
		}
	}
	if ents, err := os.ReadDir(base + "/fd"); err == nil {
		p.FDs = len(ents)
	}
	return p
}

// scrape fetches a Prometheus text exposition and returns its samples
// keyed by name and labels as written (name{label="v"}). Only the names
// the report uses are kept, so a sample costs little.
func scrape(ctx context.Context, client *http.Client, url string, keep func(name string) bool) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return parseMetrics(resp.Body, keep)
}

func parseMetrics(r io.Reader, keep func(name string) bool) (map[string]float64, error) {
	out := make(map[string]float64)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// name{labels} value [timestamp]; label values may hold spaces,
		// so split at the closing brace when there is one.
		key, rest := line, ""
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			key, rest = line[:i+1], line[i+1:]
		} else if j := strings.IndexByte(line, ' '); j >= 0 {
			key, rest = line[:j], line[j:]
		}
		name, _, _ := strings.Cut(key, "{")
		if !keep(name) {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		out[key] = v
	}
	return out, sc.Err()
}

// raiseNofile raises RLIMIT_NOFILE: every session is a descriptor, so
// 10,000 sessions need more than the usual 1024. The soft limit goes to the
// hard limit (Go's runtime already does that at start; this makes it
// explicit and reportable), and when the hard limit is below what the run
// needs, a process with CAP_SYS_RESOURCE raises that too.
func raiseNofile(need uint64) (string, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return "", fmt.Errorf("getrlimit NOFILE: %w", err)
	}
	hardNote := ""
	if rl.Max < need {
		want := syscall.Rlimit{Cur: need, Max: need}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
			hardNote = fmt.Sprintf(", hard limit raised from %d", rl.Max)
			rl = want
		} else {
			hardNote = fmt.Sprintf(", hard limit not raisable (%v)", err)
		}
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return "", fmt.Errorf("setrlimit NOFILE to %d: %w", rl.Max, err)
		}
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return "", fmt.Errorf("getrlimit NOFILE: %w", err)
	}
	msg := fmt.Sprintf("RLIMIT_NOFILE raised to the hard limit: soft %d, hard %d%s; the run needs about %d", rl.Cur, rl.Max, hardNote, need)
	if rl.Cur < need {
		msg += "; WARNING: too low, expect EMFILE failures"
	}
	return msg, nil
}

// ownGoroutines is runtime.NumGoroutine, named for the report.
func ownGoroutines() int { return runtime.NumGoroutine() }
