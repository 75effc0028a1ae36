package server

// Reload: SIGHUP (and the control socket's reload) re-reads the
// configuration (Options.Source: tunneld's config file and command line)
// and the clients policy. A file that does not parse or validate
// changes nothing; a valid one is applied per subsystem, touching only
// what changed, and settings that need a restart are named in a warning.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"tlsvpn/certs"
	"tlsvpn/internal/service"
	"tlsvpn/state"
	"tlsvpn/transport"
	"tlsvpn/tunnel"
)

// subsystem is what applies a setting that reloads live.
type subsystem int

const (
	subLog      subsystem = iota + 1 // the logger's level
	subLimits                        // tunnel.Limiter.SetConfig
	subServer                        // tunnel.Server.SetLive: new connections and sessions
	subPushed                        // tunnel.Server.SetLive: in CONFIG; sessions using it reconnect
	subCRL                           // the revocation checker is replaced
	subCRLCheck                      // the interval of the CRL and session checks
	subPolicy                        // the clients policy and its default reach_clients
	subShare                         // transport.ShareListener.SetLimits
)

// liveSettings are the flags a reload applies while tunneld runs, by the
// subsystem that applies them. Every other flag needs a restart: that is
// also the safe answer for a flag added later and not listed here.
var liveSettings = map[string]subsystem{
	"log-level":                 subLog,
	"max-clients":               subLimits,
	"max-sessions-per-client":   subLimits,
	"max-handshakes-per-source": subLimits,
	"handshake-queue":           subLimits,
	"handshake-queue-wait":      subLimits,
	"handshake-rate":            subLimits,
	"handshake-burst":           subLimits,
	"keepalive":                 subServer,
	"handshake-timeout":         subServer,
	"hello-timeout":             subServer,
	"max-connections":           subServer,
	"queue-len":                 subServer,
	"route":                     subPushed,
	"dns":                       subPushed,
	"crl":                       subCRL,
	"crl-check":                 subCRLCheck,
	"clients":                   subPolicy,
	"client-to-client":          subPolicy,
	"share-max-conns":           subShare,
	"share-idle-timeout":        subShare,
}

// reloadPlan is what a reload does, from the flag values before and after.
type reloadPlan struct {
	live    []string // changed settings applied now, sorted
	restart []string // changed settings that need a restart, sorted
	subs    map[subsystem]bool
}

// planReload compares two sets of flag values (name -> value).
func planReload(old, next map[string]string) reloadPlan {
	p := reloadPlan{subs: map[subsystem]bool{}}
	for _, name := range slices.Sorted(maps.Keys(next)) {
		before, ok := old[name]
		if !ok || before == next[name] {
			continue
		}
		if sub, live := liveSettings[name]; live {
			p.live = append(p.live, name)
			p.subs[sub] = true
		} else {
			p.restart = append(p.restart, name)
		}
	}
	return p
}

// String lists the plan's actions, for logs and tests.
func (p reloadPlan) String() string {
	var acts []string
	for _, a := range []struct {
		sub  subsystem
		what string
	}{
		{subLog, "set the log level"},
		{subLimits, "set the connection limits"},
		{subServer, "set the settings of new connections"},
		{subPushed, "push new routes/DNS: reconnect the sessions they change"},
		{subCRL, "switch the revocation list"},
		{subCRLCheck, "set the CRL check interval"},
		{subPolicy, "apply the clients policy defaults"},
		{subShare, "set the shared port's relay limits"},
	} {
		if p.subs[a.sub] {
			acts = append(acts, a.what)
		}
	}
	if len(p.restart) > 0 {
		acts = append(acts, "warn: restart needed for "+strings.Join(p.restart, ", "))
	}
	if len(acts) == 0 {
		return "nothing changed"
	}
	return strings.Join(acts, "; ")
}

// crlHolder is the revocation checker in force (none without --crl). A
// reload that changes --crl swaps it; handshakes and session checks
// always read the current one.
type crlHolder struct {
	rev atomic.Pointer[revocation] // nil: none
}

// revocation boxes a state.Revocation for an atomic.Pointer.
type revocation struct{ state.Revocation }

// load returns the revocation checker in force, nil if none.
func (h *crlHolder) load() state.Revocation {
	if r := h.rev.Load(); r != nil {
		return r.Revocation
	}
	return nil
}

// store puts r in force (nil: none).
func (h *crlHolder) store(r state.Revocation) {
	if r == nil {
		h.rev.Store(nil)
		return
	}
	h.rev.Store(&revocation{r})
}

// OpenCRL loads the CRL at path, which must be signed by the CA in caFile
// (the file-backed state.Revocation).
func OpenCRL(caFile, path string) (state.Revocation, error) {
	return state.OpenRevocation(caFile, path)
}

// wrap returns cfg checking every handshake, resumptions included, against
// the current revocation list (as certs.WithRevocation does for a fixed one).
func (h *crlHolder) wrap(cfg *tls.Config) *tls.Config {
	out := cfg.Clone()
	prev := cfg.VerifyConnection
	out.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		if r := h.load(); r != nil {
			return r.VerifyConnection(cs)
		}
		return nil
	}
	return out
}

// checkPeer re-checks a live session's client certificate: revocation and
// expiry with a CRL, expiry alone without.
func (h *crlHolder) checkPeer(cs tls.ConnectionState) error {
	if r := h.load(); r != nil {
		return r.VerifyConnection(cs)
	}
	if len(cs.PeerCertificates) > 0 && time.Now().After(cs.PeerCertificates[0].NotAfter) {
		return fmt.Errorf("client certificate expired at %v", cs.PeerCertificates[0].NotAfter)
	}
	return nil
}

// reloader applies new settings to a running tunneld.
type reloader struct {
	src         func() (Config, error) // nil: nothing to reload from
	level       *slog.LevelVar         // nil: the level is not the server's to set
	ca          string                 // the CA in force (a new one needs a restart)
	pool, pool6 state.Leases           // pool6 nil without Subnet6
	policies    *atomic.Pointer[policySet]
	srv         *tunnel.Server
	limits      *tunnel.Limiter
	crl         *crlHolder
	share       *transport.ShareListener // nil: the port is not shared
	forwarding  bool                     // IP forwarding and the firewall were set up at start
	log         *slog.Logger
	crlEvery    atomic.Int64 // --crl-check in force, in nanoseconds
	// crlChanged, if not nil, says that the revocation list changed at
	// its source (a fleet's CRL in etcd): it is checked at once rather
	// than at the next --crl-check.
	crlChanged <-chan struct{}
	// fleetPolicy is the fleet's clients policy in etcd (nil without
	// state: etcd); while one is published it is in force, not the local
	// one. Its mutable fields are guarded by mu.
	fleetPolicy *fleetPolicy

	mu     sync.Mutex // one reload or check at a time; guards cur and crlBad
	cur    Config     // the settings in force; Settings holds the running value of restart-only ones
	crlBad bool       // the revocation list is unusable (reported once)
}

// newReloader returns the reloader of a tunneld running with c.
func newReloader(r *reloader, c Config) *reloader {
	r.cur = c
	r.cur.Settings = c.settings()
	r.ca = c.CA
	r.crlEvery.Store(int64(c.CRLCheck))
	return r
}

// errReloadRefused wraps why a reload changed nothing.
var errReloadRefused = errors.New("reload refused: the configuration in force is kept")

// Reload re-reads the config file (if any) and the clients policy and
// applies what changed, and returns what it did in words. On any problem
// it changes nothing and returns it (also logged). SIGHUP and 'tunneld
// reload' call it.
func (r *reloader) Reload() (string, error) {
	defer service.NotifyReloading(r.log)() // systemctl reload returns when this does
	r.mu.Lock()
	defer r.mu.Unlock()
	next, rev, clients, err := r.prepare()
	if err != nil {
		r.log.Error("reload refused: keeping the previous configuration and client policies", "err", err)
		r.checkCRLLocked(false)
		return "", fmt.Errorf("%w: %w", errReloadRefused, err)
	}
	nextValues := next.settings()
	plan := planReload(r.cur.Settings, nextValues)
	for _, name := range plan.restart {
		r.log.Warn("setting changed but needs a restart: keeping the running value until then", "setting", name,
			"running", r.cur.Settings[name], "configured", nextValues[name])
	}
	if plan.subs[subLog] && r.level != nil {
		r.level.Set(next.LogLevel)
	}
	if plan.subs[subLimits] {
		r.limits.SetConfig(next.limitConfig())
		r.log.Info("connection limits changed", "limits", fmt.Sprintf("%+v", r.limits.Config()))
	}
	if plan.subs[subShare] && r.share != nil {
		r.share.SetLimits(next.ShareMaxConns, next.ShareIdleTimeout)
		maxRelays, idle := r.share.Limits()
		r.log.Info("shared port's relay limits changed", "max_conns", maxRelays, "idle_timeout", idle)
	}
	var reconnected []string
	if plan.subs[subServer] || plan.subs[subPushed] {
		maxConns, _ := connectionLimit(next.MaxConnections)
		reconnected = r.srv.SetLive(tunnel.Live{Routes: next.Routes, DNS: next.DNS, Keepalive: next.Keepalive,
			HandshakeTimeout: next.HandshakeTimeout, HelloTimeout: next.HelloTimeout, MaxConnections: maxConns, QueueLen: next.QueueLen})
	}
	if !r.forwarding && next.needsForwarding() {
		r.log.Warn("routes, a clients policy or client-to-client need IP forwarding and the firewall, which tunneld sets up only at start: restart to route for clients")
	}
	if plan.subs[subCRL] {
		r.crl.store(rev)
		r.crlBad = false
		if rev == nil {
			r.log.Warn("revocation list removed (--crl): revoked client certificates are no longer refused")
		} else {
			r.log.Info("revocation list switched", "file", rev.Path())
		}
	}
	r.crlEvery.Store(int64(next.CRLCheck))
	summarized := next
	if fleetClients, ok := r.fleetPolicy.inForce(); ok {
		// The fleet's policy in etcd is in force: only the default of
		// reach_clients may have changed here.
		if next.Policy != nil {
			r.log.Warn("the fleet's clients policy is published in etcd: the local clients policy is ignored", "ignored", next.PolicySource)
		}
		if plan.subs[subPolicy] {
			reconnected = append(reconnected, r.applyPolicyLocked(fleetClients, next.ClientToClient, r.fleetPolicy.source(r.fleetPolicy.rev))...)
		}
		summarized.Policy = nil
	} else if next.Policy != nil || r.cur.Policy != nil || plan.subs[subPolicy] {
		reconnected = append(reconnected, r.applyPolicyLocked(clients, next.ClientToClient, next.PolicySource)...)
	}
	// What needs a restart keeps its running value, so that the next
	// reload warns again until the restart.
	values := maps.Clone(nextValues)
	for _, name := range plan.restart {
		values[name] = r.cur.Settings[name]
	}
	r.cur = next
	r.cur.Settings = values
	slices.Sort(reconnected)
	reconnected = slices.Compact(reconnected)
	r.log.Info("configuration reloaded", "file", next.ConfigFile, "applied", strings.Join(plan.live, ","),
		"needs_restart", strings.Join(plan.restart, ","), "sessions_reconnected", len(reconnected))
	if plan.subs[subCRL] || r.crl.load() != nil {
		r.checkCRLLocked(true)
	}
	summary := reloadSummary(summarized, plan, len(reconnected), r.crl.load(), r.crlBad)
	if _, ok := r.fleetPolicy.inForce(); ok {
		summary += "\nclients policy: the fleet's, " + r.fleetPolicy.source(r.fleetPolicy.rev)
	}
	return summary, nil
}

// applyPolicyLocked puts clients in force with reach as the default of
// reach_clients: fixed addresses are pinned, and only the sessions whose
// address or own policy changed reconnect, which it returns. r.mu is
// held.
func (r *reloader) applyPolicyLocked(clients Policies, reach bool, source string) []string {
	r.policies.Store(&policySet{clients: clients, reach: reach})
	moved, err := clients.Pin(r.pool, r.pool6)
	if err != nil {
		r.log.Error("fixed addresses from the clients policy", "err", err)
	}
	for _, id := range moved {
		r.srv.Reconfigure(id, "tunnel address changed")
	}
	closed := r.srv.Policies()
	r.log.Info("client policies reloaded", "file", source, "clients", len(clients), "readdressed", len(moved), "reconfigured", len(closed))
	return append(moved, closed...)
}

// reloadSummary says in words what a reload applied, for 'tunneld reload'.
func reloadSummary(next Config, plan reloadPlan, reconnected int, rev state.Revocation, crlBad bool) string {
	var b strings.Builder
	from := "the command line"
	if next.ConfigFile != "" {
		from = next.ConfigFile
	}
	fmt.Fprintf(&b, "configuration reloaded from %s", from)
	if len(plan.live) > 0 {
		fmt.Fprintf(&b, "\napplied: %s", strings.Join(plan.live, ", "))
	} else {
		b.WriteString("\nno setting changed")
	}
	if len(plan.restart) > 0 {
		fmt.Fprintf(&b, "\nneeds a restart, running value kept: %s", strings.Join(plan.restart, ", "))
	}
	if next.Policy != nil {
		fmt.Fprintf(&b, "\nclient policies reloaded from %s", next.PolicySource)
	}
	fmt.Fprintf(&b, "\n%d sessions reconnected for a changed configuration", reconnected)
	if rev != nil {
		if crlBad {
			fmt.Fprintf(&b, "\nrevocation list %s unusable: every client is refused until it is fixed", rev.Path())
		} else {
			fmt.Fprintf(&b, "\nrevocation list reloaded from %s", rev.Path())
		}
	}
	return b.String()
}

// prepare reads and validates the new settings without applying any:
// the settings, the revocation checker if the CRL changed (nil if it was
// removed), and the clients policy.
func (r *reloader) prepare() (next Config, rev state.Revocation, clients Policies, err error) {
	if r.src == nil {
		err = errors.New("no configuration source to re-read")
		return
	}
	if next, err = r.src(); err != nil {
		return
	}
	next = next.withDefaults()
	if err = next.validate(); err != nil {
		return
	}
	if _, err = certs.ServerConfig(next.Cert, next.Key, next.CA); err != nil {
		return
	}
	if next.CRL != r.cur.CRL && next.CRL != "" {
		// Against the CA in force: a new CA needs a restart.
		if rev, err = OpenCRL(r.ca, next.CRL); err != nil {
			rev, err = nil, fmt.Errorf("%s: %w", next.where("crl"), err)
			return
		}
	}
	if _, fleet := r.fleetPolicy.inForce(); next.Policy != nil && !fleet {
		clients, err = next.Policy(r.pool, r.pool6)
	}
	return
}

// checkCRLLocked reloads the revocation list (force: always, else if its
// file changed) and closes the sessions of revoked or expired
// certificates. r.mu is held.
func (r *reloader) checkCRLLocked(force bool) {
	if rev := r.crl.load(); rev != nil {
		var err error
		reloaded := force
		if force {
			err = rev.Reload()
		} else {
			reloaded, err = rev.ReloadIfChanged()
		}
		if err == nil {
			_, err = rev.NextUpdate() // also fails once a loaded CRL expires
		}
		switch {
		case err != nil && !r.crlBad:
			r.log.Error("revocation list unusable: refusing every client until it is fixed", "file", rev.Path(), "err", err)
		case err == nil && r.crlBad:
			r.log.Info("revocation list usable again", "file", rev.Path())
		case err == nil && reloaded:
			r.log.Info("revocation list reloaded", "file", rev.Path())
		}
		r.crlBad = err != nil
	}
	if n := r.srv.CheckSessions(); n > 0 {
		r.log.Warn("closed sessions of revoked or expired certificates", "sessions", n)
	}
}

// watch reloads on SIGHUP, and every --crl-check reloads the CRL when its
// file changes and closes live sessions whose certificate was revoked or
// has expired.
func (r *reloader) watch(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	every := time.Duration(r.crlEvery.Load())
	t := time.NewTicker(max(every, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.Reload() // logs its outcome
		case <-t.C:
			r.mu.Lock()
			r.checkCRLLocked(false)
			r.mu.Unlock()
		case <-r.crlChanged:
			r.mu.Lock()
			r.checkCRLLocked(false)
			r.mu.Unlock()
		case <-r.policyNews():
			r.fleetPolicyChanged()
		}
		if e := time.Duration(r.crlEvery.Load()); e != every {
			every = e
			t.Reset(max(every, 100*time.Millisecond))
		}
	}
}
