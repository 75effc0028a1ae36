package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tlsvpn/tunnel"
)

// Phases of a run, in order.
const (
	phaseStart = "start"
	phaseRamp  = "ramp"
	phaseHold  = "hold"
	phasePing  = "ping-check"
	phaseClose = "close"
	phaseAfter = "after"
)

// Labels of connection attempts: the first connects of the held sessions
// (and their retries while the ramp lasts), the churn sessions', and the
// held sessions' reconnects after the ramp (with --reconnect).
const (
	attRamp      = "ramp"
	attChurn     = "churn"
	attReconnect = "reconnect"
)

const (
	minBackoff = 250 * time.Millisecond // tunnelc's reconnect backoff
	maxBackoff = 30 * time.Second
	// stableSession is how long a session must have lived for its end to
	// reset the backoff, as in tunnelc.
	stableSession = 10 * time.Second
	// maxRTTSamples bounds the keepalive round-trip samples kept.
	maxRTTSamples = 200000
)

// attempts collects connection attempts of one label.
type attempts struct {
	Attempts int
	OK       int
	Resumed  int
	tcp      []time.Duration
	tls      []time.Duration
	config   []time.Duration
	total    []time.Duration
}

// failKey groups failures for the report.
type failKey struct{ phase, reason string }

type failure struct {
	n       int
	example string // one raw error text, for whoever reads the JSON
}

// outage is a time the held sessions were fewer than at the end of the
// ramp, e.g. after the server was restarted.
type outage struct {
	start, firstBack, end time.Time
	lost                  int // held sessions lost during it
	minLive               int // fewest held sessions up during it
	reconnects            int // sessions that came back during it
}

// gen is one load run.
type gen struct {
	o      options
	stderr io.Writer
	httpc  *http.Client
	sem    chan struct{} // --concurrency
	start  time.Time

	phase atomic.Pointer[string]

	live      atomic.Int64 // held sessions up
	churnLive atomic.Int64 // churn sessions up
	inflight  atomic.Int64 // connection attempts in progress
	maxInfl   atomic.Int64
	okTotal   atomic.Int64
	failTotal atomic.Int64

	txData, txBytes, rxData, rxBytes atomic.Uint64
	pingsSent, pongsRecv, pingsRecv  atomic.Uint64
	churnCycles                      atomic.Uint64
	serverPIDSeen                    atomic.Int64

	// rampStart is set before the first session goroutine starts and
	// not changed after.
	rampStart time.Time

	mu          sync.Mutex // guards what follows
	att         map[string]*attempts
	failures    map[failKey]*failure
	rampTimes   []time.Duration // when each ramp connect succeeded, from the ramp's start
	rtt         []time.Duration // keepalive PING round trips
	sessions    map[*session]struct{}
	closingAll  bool
	churnCloses map[string]int
	target      int // held sessions up at the end of the ramp; 0 during it
	cur         *outage
	outages     []outage
	recovered   chan struct{} // signalled when an outage ends
	samples     []sample
	pids        []int // server PIDs seen, in order
}

func newGen(o options, stderr io.Writer) (*gen, error) {
	g := &gen{
		o:      o,
		stderr: stderr,
		// A fresh connection per scrape: an idle keep-alive connection
		// would hold a goroutine in the server and skew its "after"
		// count. No proxy: the server is on a local or namespace address.
		httpc: &http.Client{Timeout: 3 * time.Second,
			Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}},
		sem:         make(chan struct{}, o.concurrency),
		att:         map[string]*attempts{attRamp: {}, attChurn: {}, attReconnect: {}},
		failures:    make(map[failKey]*failure),
		sessions:    make(map[*session]struct{}),
		churnCloses: make(map[string]int),
		recovered:   make(chan struct{}, 1),
	}
	g.setPhase(phaseStart)
	return g, nil
}

func (g *gen) setPhase(p string) { g.phase.Store(&p) }
func (g *gen) getPhase() string  { return *g.phase.Load() }

func (g *gen) logf(format string, args ...any) {
	fmt.Fprintf(g.stderr, "tlsvpn-load: "+format+"\n", args...)
}

// attempt runs one connection attempt and records its outcome under label.
func (g *gen) attempt(ctx context.Context, id *identity, label string) (*session, error) {
	n := g.inflight.Add(1)
	for {
		m := g.maxInfl.Load()
		if n <= m || g.maxInfl.CompareAndSwap(m, n) {
			break
		}
	}
	s, tm, err := g.connect(ctx, id)
	g.inflight.Add(-1)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err // the run moved on: not the server's failure
		}
		g.failTotal.Add(1)
		g.mu.Lock()
		g.att[label].Attempts++
		g.mu.Unlock()
		g.fail(label, err)
		return nil, err
	}
	g.okTotal.Add(1)
	g.mu.Lock()
	a := g.att[label]
	a.Attempts++
	a.OK++
	if tm.resumed {
		a.Resumed++
	}
	a.tcp = append(a.tcp, tm.tcp)
	a.tls = append(a.tls, tm.tls)
	a.config = append(a.config, tm.config)
	a.total = append(a.total, tm.total)
	g.mu.Unlock()
	return s, nil
}

// fail counts a failure under its phase and classified reason.
func (g *gen) fail(phase string, err error) {
	k := failKey{phase, classify(err)}
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.failures[k]
	if f == nil {
		f = &failure{example: err.Error()}
		g.failures[k] = f
	}
	f.n++
}

func (g *gen) noteRTT(d time.Duration) {
	g.mu.Lock()
	if len(g.rtt) < maxRTTSamples {
		g.rtt = append(g.rtt, d)
	}
	g.mu.Unlock()
}

// register adds an established session to those closed at the end. Once
// the closing has started it refuses, and the caller closes the session.
func (g *gen) register(s *session) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closingAll {
		return false
	}
	g.sessions[s] = struct{}{}
	return true
}

func (g *gen) unregister(s *session) {
	g.mu.Lock()
	delete(g.sessions, s)
	g.mu.Unlock()
}

// heldUp notes a held session coming up; an outage ends when all are back.
func (g *gen) heldUp(label string) {
	live := int(g.live.Add(1))
	g.mu.Lock()
	defer g.mu.Unlock()
	if label == attRamp && g.target == 0 {
		g.rampTimes = append(g.rampTimes, time.Since(g.rampStart))
	}
	if g.cur == nil {
		return
	}
	g.cur.reconnects++
	if g.cur.firstBack.IsZero() {
		g.cur.firstBack = time.Now()
	}
	if live >= g.target {
		g.cur.end = time.Now()
		g.outages = append(g.outages, *g.cur)
		g.cur = nil
		select {
		case g.recovered <- struct{}{}:
		default:
		}
	}
}

// heldLost notes a held session lost; after the ramp that opens an outage.
func (g *gen) heldLost() {
	live := int(g.live.Add(-1))
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.target == 0 {
		return
	}
	if g.cur == nil {
		g.cur = &outage{start: time.Now(), minLive: live}
	}
	g.cur.lost++
	g.cur.minLive = min(g.cur.minLive, live)
}

// held keeps one held session up: the first connect (counted as the ramp),
// then, with --reconnect, reconnects after failures and losses with
// tunnelc's backoff until ctx ends. first is told once when the ramp is
// done with this session (up, or failed without --reconnect).
func (g *gen) held(ctx context.Context, id *identity, first func(ok bool)) {
	backoff := minBackoff
	signalled := false
	tell := func(ok bool) {
		if !signalled {
			signalled = true
			first(ok)
		}
	}
	defer tell(false)
	for ctx.Err() == nil {
		label := attReconnect
		if g.getPhase() == phaseRamp {
			label = attRamp
			select {
			case g.sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
		s, err := g.attempt(ctx, id, label)
		if label == attRamp {
			<-g.sem
		}
		if err != nil {
			if ctx.Err() != nil || !g.o.reconnect {
				return
			}
			if !sleepCtx(ctx, tunnel.Jitter(backoff)) {
				return
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		// Started before it is registered: close waits for the reader.
		s.start()
		if !g.register(s) {
			s.close("load test done", g.o.closeWait)
			return
		}
		g.heldUp(label)
		tell(true)
		<-s.done
		g.unregister(s)
		if s.closing.Load() {
			return // closed by us at the end of the run
		}
		g.heldLost()
		g.fail("hold", &stageError{"session", s.endErr})
		if !g.o.reconnect {
			return
		}
		if time.Since(s.started) > stableSession {
			backoff = minBackoff
		}
		if !sleepCtx(ctx, tunnel.Jitter(minBackoff)) {
			return
		}
	}
}

// churner connects, holds for --churn-life, closes and reconnects until
// until passes or ctx ends.
func (g *gen) churner(ctx context.Context, id *identity, until time.Time) {
	backoff := minBackoff
	for ctx.Err() == nil && time.Now().Before(until) {
		select {
		case g.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		s, err := g.attempt(ctx, id, attChurn)
		<-g.sem
		if err != nil {
			if !sleepCtx(ctx, tunnel.Jitter(backoff)) {
				return
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
		s.start()
		if !g.register(s) {
			s.close("load test done", g.o.closeWait)
			return
		}
		g.churnLive.Add(1)
		t := time.NewTimer(tunnel.Jitter(max(g.o.churnLife, time.Millisecond)))
		select {
		case <-s.done:
			if !s.closing.Load() {
				g.fail("churn", &stageError{"session", s.endErr})
			}
		case <-t.C:
			out := s.close("churn", g.o.closeWait)
			g.mu.Lock()
			g.churnCloses[out]++
			g.mu.Unlock()
			g.churnCycles.Add(1)
		case <-ctx.Done():
			// closeAll closes it with the others.
			<-s.done
		}
		t.Stop()
		g.churnLive.Add(-1)
		g.unregister(s)
	}
}

// serverPID returns tunneld's PID from --server-pid or --server-pid-file.
func (g *gen) serverPID() int {
	if g.o.serverPIDFile == "" {
		return g.o.serverPID
	}
	b, err := os.ReadFile(g.o.serverPIDFile)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// sample is the state of both processes at one moment.
type sample struct {
	T       float64            `json:"t_s"` // seconds since the start of the run
	Phase   string             `json:"phase"`
	Live    int64              `json:"held_live"`
	Churn   int64              `json:"churn_live"`
	InFl    int64              `json:"in_flight"`
	Server  procSnap           `json:"server"`
	Self    procSnap           `json:"self"`
	SrvGor  int                `json:"server_goroutines"` // -1: unknown
	SrvSess int                `json:"server_sessions"`   // -1: unknown
	SelfGor int                `json:"self_goroutines"`
	Metrics map[string]float64 `json:"metrics,omitempty"`
	MetErr  string             `json:"metrics_error,omitempty"`
}

func (g *gen) keepMetric(name string) bool {
	switch name {
	case "go_goroutines", "go_threads", "process_open_fds", "process_resident_memory_bytes", "process_cpu_seconds_total":
		return true
	}
	return strings.HasPrefix(name, g.o.metricsPrefix+"_")
}

// takeSample reads /proc for tunneld and this process and scrapes the
// server's metrics.
func (g *gen) takeSample(ctx context.Context) sample {
	s := sample{
		T: time.Since(g.start).Seconds(), Phase: g.getPhase(),
		Live: g.live.Load(), Churn: g.churnLive.Load(), InFl: g.inflight.Load(),
		SrvGor: -1, SrvSess: -1, SelfGor: ownGoroutines(),
		Self: readProc(os.Getpid()),
	}
	if pid := g.serverPID(); pid > 0 {
		s.Server = readProc(pid)
		if old := g.serverPIDSeen.Swap(int64(pid)); old != int64(pid) {
			g.mu.Lock()
			g.pids = append(g.pids, pid)
			g.mu.Unlock()
			if old != 0 {
				g.logf("server PID changed %d -> %d", old, pid)
			}
		}
	}
	if g.o.metricsURL != "" {
		m, err := scrape(ctx, g.httpc, g.o.metricsURL, g.keepMetric)
		if err != nil {
			s.MetErr = normalize(err.Error())
		} else {
			s.Metrics = m
			if v, ok := m["go_goroutines"]; ok {
				s.SrvGor = int(v)
			}
			if v, ok := m[g.o.metricsPrefix+"_sessions"]; ok {
				s.SrvSess = int(v)
			}
		}
	}
	return s
}

// sampler records a sample every --sample-every until ctx ends, keeping
// only the headline numbers of periodic samples.
func (g *gen) sampler(ctx context.Context) {
	t := time.NewTicker(g.o.sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := g.takeSample(ctx)
		s.Metrics = nil
		g.mu.Lock()
		g.samples = append(g.samples, s)
		g.mu.Unlock()
	}
}

// progress prints a status line every --progress, so a long ramp shows
// that it moves.
func (g *gen) progress(ctx context.Context) {
	if g.o.progress <= 0 {
		return
	}
	t := time.NewTicker(g.o.progress)
	defer t.Stop()
	lastOK, last := g.okTotal.Load(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, now := g.okTotal.Load(), time.Now()
		rate := float64(ok-lastOK) / now.Sub(last).Seconds()
		lastOK, last = ok, now
		g.logf("[%6.1fs] %-10s held %d/%d  churn up %d  in flight %d  connects ok %d failed %d  (%.0f/s)",
			time.Since(g.start).Seconds(), g.getPhase(), g.live.Load(), g.o.sessions, g.churnLive.Load(),
			g.inflight.Load(), ok, g.failTotal.Load(), rate)
	}
}

// writeReady writes --ready-file, via a rename so a reader never sees it
// half written.
func (g *gen) writeReady(up, want int) {
	if g.o.readyFile == "" {
		return
	}
	tmp := filepath.Join(filepath.Dir(g.o.readyFile), "."+filepath.Base(g.o.readyFile)+".tmp")
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "held %d/%d\n", up, want), 0o644); err != nil {
		g.logf("ready file: %v", err)
		return
	}
	if err := os.Rename(tmp, g.o.readyFile); err != nil {
		g.logf("ready file: %v", err)
	}
}

// run performs the whole load run and returns its report. It always
// closes what it opened, also when ctx ends early.
func (g *gen) run(ctx context.Context) *report {
	g.start = time.Now()
	r := &report{Config: g.o.reportConfig(), Started: g.start.UTC().Format(time.RFC3339)}
	r.Machine.GOMAXPROCS = runtime.GOMAXPROCS(0)
	r.Machine.NumCPU = runtime.NumCPU()

	// One descriptor per session, plus the few the process holds anyway.
	need := uint64(g.o.sessions+g.o.churn) + 64
	if msg, err := raiseNofile(need); err != nil {
		r.Notes = append(r.Notes, err.Error())
	} else {
		r.Nofile = msg
		g.logf("%s", msg)
	}

	g.logf("minting %d client certificates (ECDSA P-256) from %s", g.o.sessions+g.o.churn, g.o.pki)
	ids, took, err := mintIdentities(g.o)
	if err != nil {
		r.Aborted = "minting certificates: " + err.Error()
		return r
	}
	r.Mint = mintReport{Count: len(ids), Seconds: took.Seconds(), PerSecond: float64(len(ids)) / max(took.Seconds(), 1e-9)}
	g.logf("minted %d certificates in %.2fs (%.0f/s)", len(ids), took.Seconds(), r.Mint.PerSecond)

	sctx, stopSampling := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSampling()
	// workCtx ends the connecting: the ramp, churn and reconnects stop
	// when the hold ends. Established sessions outlive it; closeAll ends
	// them.
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()

	r.Before = g.takeSample(context.Background())
	go g.sampler(sctx)
	go g.progress(sctx)

	// Ramp.
	held, churn := ids[:g.o.sessions], ids[g.o.sessions:]
	rampCtx, endRamp := context.WithCancel(workCtx)
	defer endRamp()
	var wg sync.WaitGroup
	firstCh := make(chan bool, len(held))
	first := func(ok bool) { firstCh <- ok }
	// Snapshots use their own context: the scrape is bounded by itself,
	// and a run cut short still reports what the server looked like.
	snap := func() sample { return g.takeSample(context.Background()) }
	rampStart := time.Now()
	g.rampStart = rampStart
	g.setPhase(phaseRamp)
	g.logf("ramp: %d sessions, rate %s, concurrency %d", len(held), rateString(g.o.rate), g.o.concurrency)
	spawned := make(chan int, 1)
	go func() {
		n := 0
		defer func() { spawned <- n }()
		for i, id := range held {
			if g.o.rate > 0 {
				at := rampStart.Add(time.Duration(float64(i) / g.o.rate * float64(time.Second)))
				if !sleepCtx(rampCtx, time.Until(at)) {
					return
				}
			}
			if rampCtx.Err() != nil {
				return
			}
			wg.Go(func() { g.held(workCtx, id, first) })
			n++
		}
	}()
	rampTimer := time.NewTimer(g.o.rampTimeout)
	done := 0
	for done < len(held) {
		select {
		case <-firstCh:
			done++
			continue
		case <-rampTimer.C:
			r.Notes = append(r.Notes, fmt.Sprintf("ramp stopped by --ramp-timeout %v with %d of %d sessions settled", g.o.rampTimeout, done, len(held)))
		case <-ctx.Done():
		}
		break
	}
	rampTimer.Stop()
	endRamp()
	nSpawned := <-spawned
	rampEnd := time.Now()
	g.mu.Lock()
	g.target = int(g.live.Load())
	g.mu.Unlock()
	rampMaxInFlight := g.maxInfl.Load()
	r.RampEnd = snap()
	g.logf("ramp over: %d/%d held sessions up in %.2fs", g.live.Load(), len(held), rampEnd.Sub(rampStart).Seconds())
	if nSpawned < len(held) {
		r.Notes = append(r.Notes, fmt.Sprintf("%d held sessions were never started (the ramp ended first)", len(held)-nSpawned))
	}
	g.writeReady(int(g.live.Load()), len(held))

	// Hold, with the churn running from its start.
	g.setPhase(phaseHold)
	holdStart := time.Now()
	holdFor := max(g.o.hold, g.o.churnFor)
	if len(churn) > 0 && g.o.churnFor > 0 {
		until := holdStart.Add(g.o.churnFor)
		g.logf("churn: %d sessions for %v, each up %v (half to one and a half times)", len(churn), g.o.churnFor, g.o.churnLife)
		for _, id := range churn {
			wg.Go(func() { g.churner(workCtx, id, until) })
		}
	}
	if ctx.Err() == nil {
		g.logf("hold: %v", holdFor)
		holdTimer := time.NewTimer(holdFor)
		var settle <-chan time.Time
	wait:
		for {
			select {
			case <-holdTimer.C:
				break wait
			case <-ctx.Done():
				break wait
			case <-g.recovered:
				if g.o.stopWhenRecovered {
					g.logf("all held sessions are back; ending the hold in 2s")
					settle = time.After(2 * time.Second)
				}
			case <-settle:
				break wait
			}
		}
		holdTimer.Stop()
	}
	holdEnd := time.Now()
	stopWork()
	r.HoldEnd = snap()

	// Ping check of the held sessions.
	g.setPhase(phasePing)
	var pc *pingCheckReport
	if g.o.pingCheck && ctx.Err() == nil {
		pc = g.pingCheckAll()
		g.logf("ping-check: %d/%d answered", pc.Answered, g.o.sessions)
	}

	// Close everything.
	g.setPhase(phaseClose)
	closeStart := time.Now()
	closes := g.closeAll()
	closeTook := time.Since(closeStart)
	waitGroup(&wg, 10*time.Second)
	stopSampling()

	g.setPhase(phaseAfter)
	if g.o.settle > 0 {
		time.Sleep(g.o.settle)
	}
	r.After = snap()

	if err := ctx.Err(); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			r.Aborted = fmt.Sprintf("stopped by --timeout %v", g.o.timeout)
		} else {
			r.Aborted = "interrupted by a signal"
		}
	}
	g.fillReport(r, rampStart, rampEnd, holdStart, holdEnd, closeTook, closes, pc)
	r.Ramp.MaxInFlight = rampMaxInFlight
	return r
}

func rateString(r float64) string {
	if r <= 0 {
		return "as fast as possible"
	}
	return fmt.Sprintf("%g/s", r)
}

// pingCheckReport is the --ping-check result.
type pingCheckReport struct {
	Sessions int    `json:"sessions"` // --sessions
	Live     int    `json:"live"`     // held sessions up at the check
	Answered int    `json:"answered"`
	RTT      dist   `json:"rtt"`
	Missing  int    `json:"missing"` // --sessions minus answered
	Timeout  string `json:"timeout"`
}

func (g *gen) pingCheckAll() *pingCheckReport {
	g.mu.Lock()
	var live []*session
	for s := range g.sessions {
		if !s.id.churn {
			live = append(live, s)
		}
	}
	g.mu.Unlock()
	var (
		mu   sync.Mutex
		rtts []time.Duration
		wg   sync.WaitGroup
	)
	for _, s := range live {
		wg.Go(func() {
			d, err := s.pingCheck(g.o.pingTimeout)
			if err != nil {
				g.fail("ping-check", &stageError{"ping", err})
				return
			}
			mu.Lock()
			rtts = append(rtts, d)
			mu.Unlock()
		})
	}
	wg.Wait()
	pc := &pingCheckReport{Sessions: g.o.sessions, Live: len(live), Answered: len(rtts), RTT: summarize(rtts), Timeout: g.o.pingTimeout.String()}
	pc.Missing = pc.Sessions - pc.Answered
	if n := pc.Sessions - pc.Live; n > 0 {
		// Held sessions that were not up at the check are failures too;
		// their reasons are in the table under the ramp or the hold.
		g.mu.Lock()
		k := failKey{"ping-check", "ping: session not up at the check"}
		if g.failures[k] == nil {
			g.failures[k] = &failure{example: "not connected"}
		}
		g.failures[k].n += n
		g.mu.Unlock()
	}
	return pc
}

// closeAll closes every open session with CLOSE code 0, all at once as a
// fleet of clients shutting down would, and tallies the outcomes.
func (g *gen) closeAll() map[string]int {
	g.mu.Lock()
	g.closingAll = true
	all := make([]*session, 0, len(g.sessions))
	for s := range g.sessions {
		all = append(all, s)
	}
	g.mu.Unlock()
	out := make(map[string]int)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Go(func() {
			o := s.close("load test done", g.o.closeWait)
			mu.Lock()
			out[o]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// waitGroup waits for wg, at most d.
func waitGroup(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// sortedFailures returns the failure table, largest first.
func (g *gen) sortedFailures() []failureRow {
	g.mu.Lock()
	defer g.mu.Unlock()
	rows := make([]failureRow, 0, len(g.failures))
	for k, f := range g.failures {
		rows = append(rows, failureRow{Phase: k.phase, Reason: k.reason, Count: f.n, Example: f.example})
	}
	slices.SortFunc(rows, func(a, b failureRow) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Phase, b.Phase), cmp.Compare(a.Reason, b.Reason))
	})
	return rows
}
