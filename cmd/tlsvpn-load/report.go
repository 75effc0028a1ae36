package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// reportConfig is the run's settings, as the report shows them.
type reportConfig struct {
	Server            string  `json:"server"`
	Sessions          int     `json:"sessions"`
	Rate              float64 `json:"rate"`
	Concurrency       int     `json:"concurrency"`
	HoldS             float64 `json:"hold_s"`
	Churn             int     `json:"churn"`
	ChurnForS         float64 `json:"churn_for_s"`
	ChurnLifeS        float64 `json:"churn_life_s"`
	TrafficPPS        float64 `json:"traffic_pps"`
	TrafficSize       int     `json:"traffic_size"`
	Resume            bool    `json:"resume"`
	Reconnect         bool    `json:"reconnect"`
	GSO               bool    `json:"gso"`
	Sources           int     `json:"sources"`
	SourceFirst       string  `json:"source_first,omitempty"`
	SourceLast        string  `json:"source_last,omitempty"`
	PingCheck         bool    `json:"ping_check"`
	StopWhenRecovered bool    `json:"stop_when_recovered"`
	MaxFailures       int     `json:"max_failures"`
	RequirePingAll    bool    `json:"require_ping_all"`
	RequireRecovered  bool    `json:"require_recovered"`
}

func (o options) reportConfig() reportConfig {
	c := reportConfig{
		Server: o.server, Sessions: o.sessions, Rate: o.rate, Concurrency: o.concurrency,
		HoldS: o.hold.Seconds(), Churn: o.churn, ChurnForS: o.churnFor.Seconds(), ChurnLifeS: o.churnLife.Seconds(),
		TrafficPPS: o.traffic, TrafficSize: o.trafficSize, Resume: o.resume, Reconnect: o.reconnect, GSO: !o.noGSO,
		Sources: len(o.sources), PingCheck: o.pingCheck, StopWhenRecovered: o.stopWhenRecovered,
		MaxFailures: o.maxFailures, RequirePingAll: o.requirePingAll, RequireRecovered: o.requireRecovered,
	}
	if n := len(o.sources); n > 0 {
		c.SourceFirst, c.SourceLast = o.sources[0].String(), o.sources[n-1].String()
	}
	return c
}

type mintReport struct {
	Count     int     `json:"count"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
}

// bucket is the ramp's speed over one slice of its sessions.
type bucket struct {
	From      int     `json:"from"` // sessions From+1 .. To
	To        int     `json:"to"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
}

type rampReport struct {
	Sessions    int      `json:"sessions"`
	Up          int      `json:"up"`
	Seconds     float64  `json:"seconds"`    // ramp start to its last success
	PerSecond   float64  `json:"per_second"` // sessions up per second over that
	Attempts    int      `json:"attempts"`
	OK          int      `json:"ok"`
	Resumed     int      `json:"resumed"`
	Connect     dist     `json:"connect_to_config"`
	TLS         dist     `json:"tls_handshake"`
	Config      dist     `json:"hello_to_config"`
	TCP         dist     `json:"tcp_connect"`
	BucketSize  int      `json:"bucket_size"`
	Buckets     []bucket `json:"buckets"`
	MaxInFlight int64    `json:"max_in_flight"`
	// CPU per established session over the ramp, in ms; absent when
	// unknown (no --server-pid, or the server restarted).
	ServerCPUPerConnectMs *float64 `json:"server_cpu_per_connect_ms,omitempty"`
	SelfCPUPerConnectMs   *float64 `json:"self_cpu_per_connect_ms,omitempty"`
	ServerCPUSeconds      *float64 `json:"server_cpu_seconds,omitempty"`
	SelfCPUSeconds        *float64 `json:"self_cpu_seconds,omitempty"`
}

type holdReport struct {
	Seconds        float64  `json:"seconds"`
	ServerCPUCores *float64 `json:"server_cpu_cores,omitempty"` // CPU seconds per second during the hold
	SelfCPUCores   *float64 `json:"self_cpu_cores,omitempty"`
	TxData         uint64   `json:"tx_data_packets"`
	TxBytes        uint64   `json:"tx_data_bytes"`
	RxData         uint64   `json:"rx_data_packets"`
	RxBytes        uint64   `json:"rx_data_bytes"`
	PingsSent      uint64   `json:"pings_sent"`
	PongsRecv      uint64   `json:"pongs_received"`
	PingsRecv      uint64   `json:"server_pings_answered"`
	MaxInFlight    int64    `json:"max_in_flight"` // connection attempts in progress at once over the whole run
	KeepaliveRTT   dist     `json:"keepalive_rtt"`
}

type attemptsReport struct {
	Attempts  int            `json:"attempts"`
	OK        int            `json:"ok"`
	Resumed   int            `json:"resumed"`
	Seconds   float64        `json:"seconds,omitempty"`
	PerSecond float64        `json:"per_second,omitempty"` // successful connects per second
	Cycles    uint64         `json:"cycles,omitempty"`     // churn: sessions closed by us after their life
	Closes    map[string]int `json:"closes,omitempty"`
	Connect   dist           `json:"connect_to_config"`
	TLS       dist           `json:"tls_handshake"`
	Config    dist           `json:"hello_to_config"`
}

type outageReport struct {
	StartS     float64  `json:"start_s"` // since the start of the run
	Lost       int      `json:"lost"`
	MinLive    int      `json:"min_live"`
	Target     int      `json:"target"`
	Reconnects int      `json:"reconnects"`
	FirstBackS *float64 `json:"first_back_s,omitempty"` // from the outage's start
	AllBackS   *float64 `json:"all_back_s,omitempty"`   // from the outage's start; absent: not recovered
}

type closeReport struct {
	Sessions int            `json:"sessions"`
	Seconds  float64        `json:"seconds"`
	Outcomes map[string]int `json:"outcomes"`
}

type failureRow struct {
	Phase   string `json:"phase"`
	Reason  string `json:"reason"`
	Count   int    `json:"count"`
	Example string `json:"example"`
}

type check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// report is everything a run measured. writeText prints it for people,
// writeJSON for programs.
type report struct {
	Started string       `json:"started"`
	Config  reportConfig `json:"config"`
	Machine struct {
		NumCPU     int `json:"num_cpu"`
		GOMAXPROCS int `json:"gomaxprocs"`
	} `json:"machine"`
	Nofile         string             `json:"nofile"`
	ServerPIDs     []int              `json:"server_pids"`
	Mint           mintReport         `json:"mint"`
	Ramp           rampReport         `json:"ramp"`
	Hold           holdReport         `json:"hold"`
	Churn          *attemptsReport    `json:"churn,omitempty"`
	Reconnect      *attemptsReport    `json:"reconnect,omitempty"`
	Outages        []outageReport     `json:"outages,omitempty"`
	PingCheck      *pingCheckReport   `json:"ping_check,omitempty"`
	Close          closeReport        `json:"close"`
	Failures       []failureRow       `json:"failures"`
	FailureCount   int                `json:"failure_count"`
	ServerCounters map[string]float64 `json:"server_counters,omitempty"` // metric deltas over the run
	CountersNote   string             `json:"server_counters_note,omitempty"`
	Before         sample             `json:"before"`
	RampEnd        sample             `json:"ramp_end"`
	HoldEnd        sample             `json:"hold_end"`
	Peak           peakReport         `json:"peak"`
	After          sample             `json:"after"`
	Samples        []sample           `json:"samples"`
	Checks         []check            `json:"checks"`
	Notes          []string           `json:"notes,omitempty"`
	Aborted        string             `json:"aborted,omitempty"`
}

// peakReport holds the largest value of each quantity over all samples.
type peakReport struct {
	ServerRSSKiB     int64 `json:"server_rss_kib"`
	ServerHWMKiB     int64 `json:"server_hwm_kib"`
	ServerFDs        int   `json:"server_fds"`
	ServerThreads    int   `json:"server_threads"`
	ServerGoroutines int   `json:"server_goroutines"`
	ServerSessions   int   `json:"server_sessions"`
	SelfRSSKiB       int64 `json:"self_rss_kib"`
	SelfFDs          int   `json:"self_fds"`
	SelfThreads      int   `json:"self_threads"`
	SelfGoroutines   int   `json:"self_goroutines"`
}

func fptr(v float64) *float64 { return &v }

// cpuDelta is b's CPU time minus a's when both read the same process.
func cpuDelta(a, b procSnap) *float64 {
	if !a.ok() || !b.ok() || a.PID != b.PID {
		return nil
	}
	return fptr(b.CPUSeconds - a.CPUSeconds)
}

// fillReport turns what the run collected into r.
func (g *gen) fillReport(r *report, rampStart, rampEnd, holdStart, holdEnd time.Time, closeTook time.Duration, closes map[string]int, pc *pingCheckReport) {
	g.mu.Lock()
	ramp, churn, recon := *g.att[attRamp], *g.att[attChurn], *g.att[attReconnect]
	rampTimes := slices.Clone(g.rampTimes)
	rtt := slices.Clone(g.rtt)
	r.Samples = append([]sample{}, g.samples...)
	r.ServerPIDs = slices.Clone(g.pids)
	target := g.target
	outages := slices.Clone(g.outages)
	if g.cur != nil {
		outages = append(outages, *g.cur) // not recovered
	}
	churnCloses := maps.Clone(g.churnCloses)
	g.mu.Unlock()

	// Ramp: speed over the whole ramp and per bucket of sessions.
	slices.Sort(rampTimes)
	rr := rampReport{
		Sessions: g.o.sessions, Up: target, Attempts: ramp.Attempts, OK: ramp.OK, Resumed: ramp.Resumed,
		Connect: summarize(ramp.total), TLS: summarize(ramp.tls), Config: summarize(ramp.config), TCP: summarize(ramp.tcp),
	}
	if n := len(rampTimes); n > 0 {
		rr.Seconds = rampTimes[n-1].Seconds()
		rr.PerSecond = float64(n) / max(rr.Seconds, 1e-9)
		rr.BucketSize = bucketSize(g.o.sessions)
		prev := time.Duration(0)
		for from := 0; from < n; from += rr.BucketSize {
			to := min(from+rr.BucketSize, n)
			d := rampTimes[to-1] - prev
			rr.Buckets = append(rr.Buckets, bucket{From: from, To: to, Seconds: d.Seconds(), PerSecond: float64(to-from) / max(d.Seconds(), 1e-9)})
			prev = rampTimes[to-1]
		}
	} else {
		rr.Seconds = rampEnd.Sub(rampStart).Seconds()
	}
	if d := cpuDelta(r.Before.Server, r.RampEnd.Server); d != nil {
		rr.ServerCPUSeconds = d
		if ramp.OK > 0 {
			rr.ServerCPUPerConnectMs = fptr(*d * 1000 / float64(ramp.OK))
		}
	}
	if d := cpuDelta(r.Before.Self, r.RampEnd.Self); d != nil {
		rr.SelfCPUSeconds = d
		if ramp.OK > 0 {
			rr.SelfCPUPerConnectMs = fptr(*d * 1000 / float64(ramp.OK))
		}
	}
	r.Ramp = rr

	// Hold.
	hs := holdEnd.Sub(holdStart).Seconds()
	r.Hold = holdReport{
		Seconds: hs, TxData: g.txData.Load(), TxBytes: g.txBytes.Load(), RxData: g.rxData.Load(), RxBytes: g.rxBytes.Load(),
		PingsSent: g.pingsSent.Load(), PongsRecv: g.pongsRecv.Load(), PingsRecv: g.pingsRecv.Load(), KeepaliveRTT: summarize(rtt),
		MaxInFlight: g.maxInfl.Load(),
	}
	if d := cpuDelta(r.RampEnd.Server, r.HoldEnd.Server); d != nil && hs > 0 {
		r.Hold.ServerCPUCores = fptr(*d / hs)
	}
	if d := cpuDelta(r.RampEnd.Self, r.HoldEnd.Self); d != nil && hs > 0 {
		r.Hold.SelfCPUCores = fptr(*d / hs)
	}

	if g.o.churn > 0 {
		cs := min(g.o.churnFor, holdEnd.Sub(holdStart)).Seconds()
		r.Churn = &attemptsReport{Attempts: churn.Attempts, OK: churn.OK, Resumed: churn.Resumed, Seconds: cs,
			PerSecond: float64(churn.OK) / max(cs, 1e-9), Cycles: g.churnCycles.Load(), Closes: churnCloses,
			Connect: summarize(churn.total), TLS: summarize(churn.tls), Config: summarize(churn.config)}
	}
	if recon.Attempts > 0 {
		r.Reconnect = &attemptsReport{Attempts: recon.Attempts, OK: recon.OK, Resumed: recon.Resumed,
			Connect: summarize(recon.total), TLS: summarize(recon.tls), Config: summarize(recon.config)}
	}
	for _, o := range outages {
		or := outageReport{StartS: o.start.Sub(g.start).Seconds(), Lost: o.lost, MinLive: o.minLive, Target: target, Reconnects: o.reconnects}
		if !o.firstBack.IsZero() {
			or.FirstBackS = fptr(o.firstBack.Sub(o.start).Seconds())
		}
		if !o.end.IsZero() {
			or.AllBackS = fptr(o.end.Sub(o.start).Seconds())
		}
		r.Outages = append(r.Outages, or)
	}
	r.PingCheck = pc
	n := 0
	for _, v := range closes {
		n += v
	}
	r.Close = closeReport{Sessions: n, Seconds: closeTook.Seconds(), Outcomes: closes}
	r.Failures = g.sortedFailures()
	for _, f := range r.Failures {
		r.FailureCount += f.Count
	}
	r.ServerCounters, r.CountersNote = g.counterDeltas(r.Before, r.After)
	r.Peak = peaks(append([]sample{r.Before, r.RampEnd, r.HoldEnd, r.After}, r.Samples...))
	r.Checks = g.checks(r)
}

// bucketSize is the ramp's bucket: 1,000 sessions from 5,000 up, so the
// ramp rate at 10,000 compares with the rate at 1,000; a tenth of a
// smaller run.
func bucketSize(n int) int {
	if n >= 5000 {
		return 1000
	}
	return max((n+9)/10, 1)
}

// counterDeltas returns how much the server's counters grew over the run.
// After a restart (a new PID) the counters started again from zero, so the
// new server's values are reported as they are.
func (g *gen) counterDeltas(before, after sample) (map[string]float64, string) {
	if after.Metrics == nil {
		if g.o.metricsURL == "" {
			return nil, ""
		}
		return nil, "no metrics at the end of the run: " + after.MetErr
	}
	restarted := before.Server.PID != after.Server.PID || before.Metrics == nil
	out := make(map[string]float64)
	for k, v := range after.Metrics {
		name, _, _ := strings.Cut(k, "{")
		if !strings.HasSuffix(name, "_total") || !strings.HasPrefix(name, g.o.metricsPrefix+"_") {
			continue
		}
		if !restarted {
			v -= before.Metrics[k]
		}
		out[strings.TrimPrefix(k, g.o.metricsPrefix+"_")] = v
	}
	note := ""
	if restarted {
		note = "the server restarted during the run: counters are those of the last server since its start"
	}
	return out, note
}

func peaks(ss []sample) peakReport {
	p := peakReport{ServerFDs: -1, ServerThreads: -1, ServerGoroutines: -1, ServerSessions: -1, SelfFDs: -1, SelfThreads: -1, SelfGoroutines: -1}
	for _, s := range ss {
		if s.Server.ok() {
			p.ServerRSSKiB = max(p.ServerRSSKiB, s.Server.RSSKiB)
			p.ServerHWMKiB = max(p.ServerHWMKiB, s.Server.HWMKiB)
			p.ServerFDs = max(p.ServerFDs, s.Server.FDs)
			p.ServerThreads = max(p.ServerThreads, s.Server.Threads)
		}
		p.ServerGoroutines = max(p.ServerGoroutines, s.SrvGor)
		p.ServerSessions = max(p.ServerSessions, s.SrvSess)
		if s.Self.ok() {
			p.SelfRSSKiB = max(p.SelfRSSKiB, s.Self.RSSKiB)
			p.SelfFDs = max(p.SelfFDs, s.Self.FDs)
			p.SelfThreads = max(p.SelfThreads, s.Self.Threads)
		}
		p.SelfGoroutines = max(p.SelfGoroutines, s.SelfGor)
	}
	return p
}

// checks evaluates the --require-* and --max-failures expectations.
func (g *gen) checks(r *report) []check {
	cs := []check{}
	if g.o.requirePingAll {
		c := check{Name: "require-ping-all"}
		if r.PingCheck != nil {
			c.OK = r.PingCheck.Answered == g.o.sessions
			c.Detail = fmt.Sprintf("%d of %d held sessions answered", r.PingCheck.Answered, g.o.sessions)
		} else {
			c.Detail = "the ping check did not run"
		}
		cs = append(cs, c)
	}
	if g.o.maxFailures >= 0 {
		cs = append(cs, check{Name: fmt.Sprintf("max-failures %d", g.o.maxFailures), OK: r.FailureCount <= g.o.maxFailures,
			Detail: fmt.Sprintf("%d failures", r.FailureCount)})
	}
	if g.o.requireRecovered {
		c := check{Name: "require-recovered"}
		switch {
		case len(r.Outages) == 0:
			c.Detail = "no outage happened during the hold"
		case r.Outages[len(r.Outages)-1].AllBackS == nil:
			o := r.Outages[len(r.Outages)-1]
			c.Detail = fmt.Sprintf("not recovered: %d of %d held sessions up at the end", r.HoldEnd.Live, o.Target)
		default:
			c.OK = true
			c.Detail = fmt.Sprintf("all %d back %.2fs after the outage began", r.Outages[len(r.Outages)-1].Target, *r.Outages[len(r.Outages)-1].AllBackS)
		}
		cs = append(cs, c)
	}
	return cs
}

// failedChecks lists what makes the run fail.
func (r *report) failedChecks() []string {
	var out []string
	if r.Aborted != "" {
		out = append(out, "run incomplete: "+r.Aborted)
	}
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c.Name+" failed: "+c.Detail)
		}
	}
	return out
}

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func fmtDist(d dist) string {
	if d.N == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s  (n=%d)", msStr(d.P50), msStr(d.P90), msStr(d.P99), msStr(d.Max), d.N)
}

func msStr(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.0fms", v)
	}
	return fmt.Sprintf("%.2fms", v)
}

func optStr(v *float64, format string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}

func mib(kib int64) string {
	if kib <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(kib)/1024)
}

func num(v int) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprint(v)
}

func cpuStr(p procSnap) string {
	if !p.ok() {
		return "-"
	}
	return fmt.Sprintf("%.2f", p.CPUSeconds)
}

// writeText prints the report for a person.
func (r *report) writeText(w io.Writer) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	c := r.Config
	p("tlsvpn-load report (%s)", r.Started)
	p("  server          %s, tunneld pid %s", c.Server, pidList(r.ServerPIDs))
	run := fmt.Sprintf("%d held sessions, ramp %s, concurrency %d, hold %gs", c.Sessions, rateString(c.Rate), c.Concurrency, c.HoldS)
	if c.Churn > 0 {
		run += fmt.Sprintf(", churn %d for %gs (life %gs)", c.Churn, c.ChurnForS, c.ChurnLifeS)
	}
	if c.TrafficPPS > 0 {
		run += fmt.Sprintf(", traffic %g pps/session (%d B UDP)", c.TrafficPPS, c.TrafficSize)
	}
	p("  run             %s", run)
	p("  options         resume %s, reconnect %s, GSO announced %s", onOff(c.Resume), onOff(c.Reconnect), onOff(c.GSO))
	switch c.Sources {
	case 0:
		p("  sources         one (chosen by the kernel)")
	case 1:
		p("  sources         one: %s", c.SourceFirst)
	default:
		p("  sources         %d addresses, %s .. %s", c.Sources, c.SourceFirst, c.SourceLast)
	}
	p("  load generator  %d CPUs (GOMAXPROCS %d); %s", r.Machine.NumCPU, r.Machine.GOMAXPROCS, r.Nofile)
	p("  certificates    %d minted in %.2fs (%.0f/s)", r.Mint.Count, r.Mint.Seconds, r.Mint.PerSecond)
	if r.Aborted != "" {
		p("  ABORTED         %s", r.Aborted)
	}

	rr := r.Ramp
	p("")
	p("ramp")
	p("  held up         %d/%d; %d attempts, %d ok, %d resumed; at most %d in flight", rr.Up, rr.Sessions, rr.Attempts, rr.OK, rr.Resumed, rr.MaxInFlight)
	p("  speed           %d sessions in %.2fs: %.0f sessions/s", len2(rr), rr.Seconds, rr.PerSecond)
	if len(rr.Buckets) > 1 {
		var parts []string
		for _, k := range rr.Buckets {
			parts = append(parts, fmt.Sprintf("%d-%d: %.0f/s", k.From+1, k.To, k.PerSecond))
		}
		p("  per %-5d       %s", rr.BucketSize, wrap(parts, 4, "                  "))
	}
	p("  connect→CONFIG  %s", fmtDist(rr.Connect))
	p("  TCP connect     %s", fmtDist(rr.TCP))
	p("  TLS handshake   %s", fmtDist(rr.TLS))
	p("  HELLO→CONFIG    %s", fmtDist(rr.Config))
	p("  CPU per connect server %s ms (%s s in all), load generator %s ms (%s s)",
		optStr(rr.ServerCPUPerConnectMs, "%.2f"), optStr(rr.ServerCPUSeconds, "%.2f"),
		optStr(rr.SelfCPUPerConnectMs, "%.2f"), optStr(rr.SelfCPUSeconds, "%.2f"))

	h := r.Hold
	p("")
	p("hold (%.1fs)", h.Seconds)
	p("  CPU             server %s cores, load generator %s cores", optStr(h.ServerCPUCores, "%.2f"), optStr(h.SelfCPUCores, "%.2f"))
	p("  keepalive       %d PINGs sent, %d PONGs back, %d server PINGs answered; RTT %s", h.PingsSent, h.PongsRecv, h.PingsRecv, fmtDist(h.KeepaliveRTT))
	if c.TrafficPPS > 0 || h.RxData > 0 {
		srv := "n/a"
		if v, ok := r.ServerCounters["rx_packets_total"]; ok {
			srv = fmt.Sprintf("%.0f", v)
		}
		p("  traffic         sent %d DATA (%d B); server counted %s rx packets; received %d DATA (%d B)", h.TxData, h.TxBytes, srv, h.RxData, h.RxBytes)
	}
	if ch := r.Churn; ch != nil {
		p("  churn           %d connects ok of %d (%.1f/s), %d resumed, %d cycles closed", ch.OK, ch.Attempts, ch.PerSecond, ch.Resumed, ch.Cycles)
		p("    connect→CONFIG %s", fmtDist(ch.Connect))
		p("    TLS handshake  %s", fmtDist(ch.TLS))
		p("    HELLO→CONFIG   %s", fmtDist(ch.Config))
		if len(ch.Closes) > 0 {
			p("    closes         %s", mapStr(ch.Closes))
		}
	}
	if rc := r.Reconnect; rc != nil {
		p("  reconnects      %d ok of %d attempts, %d resumed; at most %d attempts in flight", rc.OK, rc.Attempts, rc.Resumed, h.MaxInFlight)
		p("    connect→CONFIG %s", fmtDist(rc.Connect))
		p("    TLS handshake  %s", fmtDist(rc.TLS))
		p("    HELLO→CONFIG   %s", fmtDist(rc.Config))
	}
	for i, o := range r.Outages {
		p("  outage %d        at %.1fs: %d sessions lost (fewest up %d of %d), %d came back; first back after %s, all back after %s",
			i+1, o.StartS, o.Lost, o.MinLive, o.Target, o.Reconnects, optStr(o.FirstBackS, "%.2fs"), optStr(o.AllBackS, "%.2fs"))
	}
	if pc := r.PingCheck; pc != nil {
		p("")
		p("ping-check        %d of %d held sessions answered within %s (%d up at the check); RTT %s", pc.Answered, pc.Sessions, pc.Timeout, pc.Live, fmtDist(pc.RTT))
	}
	p("")
	p("close             %d sessions in %.2fs: %s", r.Close.Sessions, r.Close.Seconds, mapStr(r.Close.Outcomes))

	p("")
	if len(r.Failures) == 0 {
		p("failures          none")
	} else {
		p("failures          %d", r.FailureCount)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  count\tphase\treason")
		for _, f := range r.Failures {
			fmt.Fprintf(tw, "  %d\t%s\t%s\n", f.Count, f.Phase, f.Reason)
		}
		tw.Flush()
		if hasPreTLS(r.Failures) {
			p("  note: EOF or reset in the TLS handshake is how tunneld refuses a connection over one of its")
			p("        pre-authentication limits (it closes before reading); refused_connections_total below says which")
		}
	}
	if len(r.ServerCounters) > 0 {
		p("")
		p("server counters over the run (metrics)")
		var rows []string
		for _, k := range slices.Sorted(maps.Keys(r.ServerCounters)) {
			if v := r.ServerCounters[k]; v != 0 || strings.HasPrefix(k, "refused_connections_total") || k == "handshake_failures_total" {
				rows = append(rows, fmt.Sprintf("%s %.0f", k, v))
			}
		}
		p("  %s", wrap(rows, 2, "  "))
		if r.CountersNote != "" {
			p("  note: %s", r.CountersNote)
		}
	}

	p("")
	p("resources           before    ramp end  hold end  peak      after")
	pk := r.Peak
	row := func(name string, vals ...string) {
		line := fmt.Sprintf("  %-18s", name)
		for _, v := range vals {
			line += fmt.Sprintf("%-10s", v)
		}
		b.WriteString(strings.TrimRight(line, " ") + "\n")
	}
	snaps := []sample{r.Before, r.RampEnd, r.HoldEnd}
	col := func(f func(sample) string, peak string) []string {
		var out []string
		for _, s := range snaps {
			out = append(out, f(s))
		}
		return append(out, peak, f(r.After))
	}
	row("server RSS MiB", col(func(s sample) string { return mib(s.Server.RSSKiB) }, mib(pk.ServerRSSKiB))...)
	row("server HWM MiB", col(func(s sample) string { return mib(s.Server.HWMKiB) }, mib(pk.ServerHWMKiB))...)
	row("server CPU s", col(func(s sample) string { return cpuStr(s.Server) }, "")...)
	row("server fds", col(func(s sample) string { return num(fdOr(s.Server)) }, num(pk.ServerFDs))...)
	row("server threads", col(func(s sample) string { return num(thrOr(s.Server)) }, num(pk.ServerThreads))...)
	row("server goroutines", col(func(s sample) string { return num(s.SrvGor) }, num(pk.ServerGoroutines))...)
	row("server sessions", col(func(s sample) string { return num(s.SrvSess) }, num(pk.ServerSessions))...)
	row("self RSS MiB", col(func(s sample) string { return mib(s.Self.RSSKiB) }, mib(pk.SelfRSSKiB))...)
	row("self CPU s", col(func(s sample) string { return cpuStr(s.Self) }, "")...)
	row("self fds", col(func(s sample) string { return num(fdOr(s.Self)) }, num(pk.SelfFDs))...)
	row("self goroutines", col(func(s sample) string { return num(s.SelfGor) }, num(pk.SelfGoroutines))...)
	if r.Before.Server.Err != "" {
		p("  server /proc: %s", r.Before.Server.Err)
	}
	if r.Before.MetErr != "" {
		p("  server metrics: %s", r.Before.MetErr)
	}
	if r.Peak.ServerSessions > 0 && r.Peak.ServerGoroutines > 0 {
		p("  server goroutines per session at the peak: %.2f", float64(r.Peak.ServerGoroutines-max(r.Before.SrvGor, 0))/float64(r.Peak.ServerSessions))
	}
	if r.Peak.ServerSessions > 0 && r.Peak.ServerRSSKiB > 0 && r.Before.Server.RSSKiB > 0 {
		p("  server RSS per session at the peak: %.1f KiB", float64(r.Peak.ServerRSSKiB-r.Before.Server.RSSKiB)/float64(r.Peak.ServerSessions))
	}

	if len(r.Notes) > 0 {
		p("")
		for _, n := range r.Notes {
			p("note: %s", n)
		}
	}
	if len(r.Checks) > 0 {
		p("")
		for _, c := range r.Checks {
			res := "PASS"
			if !c.OK {
				res = "FAIL"
			}
			p("check %-20s %s  %s", c.Name, res, c.Detail)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func len2(rr rampReport) int {
	n := 0
	for _, k := range rr.Buckets {
		n += k.To - k.From
	}
	return n
}

func fdOr(p procSnap) int {
	if !p.ok() {
		return -1
	}
	return p.FDs
}

func thrOr(p procSnap) int {
	if !p.ok() {
		return -1
	}
	return p.Threads
}

func hasPreTLS(rows []failureRow) bool {
	for _, f := range rows {
		if strings.HasPrefix(f.Reason, "tls: EOF") || strings.HasPrefix(f.Reason, "tls: connection reset") {
			return true
		}
	}
	return false
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func pidList(pids []int) string {
	if len(pids) == 0 {
		return "unknown (no --server-pid)"
	}
	var s []string
	for _, p := range pids {
		s = append(s, fmt.Sprint(p))
	}
	return strings.Join(s, " -> ")
}

func mapStr(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	keys := slices.SortedFunc(maps.Keys(m), func(a, b string) int { return m[b] - m[a] })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

// wrap joins parts, perRow to a line, continuing lines with indent.
func wrap(parts []string, perRow int, indent string) string {
	var b strings.Builder
	for i, s := range parts {
		switch {
		case i == 0:
		case i%perRow == 0:
			b.WriteString("\n" + indent)
		default:
			b.WriteString("   ")
		}
		b.WriteString(s)
	}
	return b.String()
}
