package state_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"tlsvpn/certs"
	"tlsvpn/certs/certstest"
	"tlsvpn/state"
	"tlsvpn/state/etcdtest"
)

// gateway opens a gateway's connection to the store with a short lease,
// closed at the end of the test.
func gateway(t *testing.T, endpoints []string, name string, opts ...func(*state.EtcdOptions)) *state.Etcd {
	t.Helper()
	o := state.EtcdOptions{Endpoints: endpoints, Gateway: name, Prefix: "/test/", TTL: 2 * time.Second, Timeout: time.Second}
	for _, f := range opts {
		f(&o)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	e, err := state.OpenEtcd(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// within polls cond for up to d.
func within(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

var subnet = netip.MustParsePrefix("100.64.0.0/24")

// shared returns the gateway's leases of subnet and its directory.
func shared(t *testing.T, e *state.Etcd) (*state.EtcdLeases, *state.EtcdDirectory) {
	t.Helper()
	l, err := e.Leases(subnet)
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Directory()
	if err != nil {
		t.Fatal(err)
	}
	return l, d
}

// TestEtcdLeasesShared: two gateways leasing at once never give one
// address to two identities nor two addresses to one identity, and both
// see the same leases; a pin on one moves the address on the other.
func TestEtcdLeasesShared(t *testing.T) {
	c := etcdtest.Start(t, 1, etcdtest.Options{})
	a, b := gateway(t, c.Endpoints(), "gw-a"), gateway(t, c.Endpoints(), "gw-b")
	la, err := a.Leases(subnet)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.Leases(subnet)
	if err != nil {
		t.Fatal(err)
	}
	var _ state.Leases = la
	if la.ServerAddr() != netip.MustParseAddr("100.64.0.1") || la.Subnet() != subnet {
		t.Fatalf("server %v subnet %v", la.ServerAddr(), la.Subnet())
	}
	// Both gateways lease the same 30 identities, in opposite orders, at once.
	const n = 30
	got := [2]map[string]netip.Addr{{}, {}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for g, l := range []*state.EtcdLeases{la, lb} {
		for w := range 3 {
			wg.Go(func() {
				for i := range n {
					if i%3 != w {
						continue
					}
					id := fmt.Sprintf("client%02d", i)
					if g == 1 {
						id = fmt.Sprintf("client%02d", n-1-i)
					}
					addr, err := l.Assign(id)
					if err != nil {
						t.Errorf("gateway %d Assign(%s): %v", g, id, err)
						return
					}
					mu.Lock()
					got[g][id] = addr
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	owners := map[netip.Addr]string{}
	for id, addr := range got[0] {
		if got[1][id] != addr {
			t.Errorf("%s: %v on gw-a, %v on gw-b", id, addr, got[1][id])
		}
		if o, dup := owners[addr]; dup {
			t.Errorf("%v given to %s and %s", addr, o, id)
		}
		owners[addr] = id
		if !la.IsClientAddr(addr) {
			t.Errorf("%s got %v, not a client address", id, addr)
		}
	}
	if len(owners) != n {
		t.Fatalf("%d addresses for %d identities", len(owners), n)
	}
	within(t, 5*time.Second, "both caches hold every lease", func() bool { return la.Len() == n && lb.Len() == n })

	// A pin on gw-a takes client00's address for "printer"; gw-b learns it.
	target := got[0]["client00"]
	evicted, err := la.Pin("printer", target)
	if err != nil || evicted != "client00" {
		t.Fatalf("Pin(printer, %v) = %q, %v; want client00 evicted", target, evicted, err)
	}
	within(t, 5*time.Second, "gw-b sees the pin", func() bool {
		o, _ := lb.Owner(target)
		_, has := lb.Lookup("client00")
		return o == "printer" && !has
	})
	again, err := lb.Assign("client00")
	if err != nil || again == target {
		t.Fatalf("client00 after the pin: %v, %v; want a new address", again, err)
	}
	if id, _ := la.Owner(again); id != "client00" && id != "" {
		t.Fatalf("client00's new address %v belongs to %q on gw-a", again, id)
	}
}

// TestEtcdDirectoryReplaced: the same identity on a second gateway
// closes the first one's session ("replaced"); at the same time on two
// gateways, exactly one session survives.
func TestEtcdDirectoryReplaced(t *testing.T) {
	c := etcdtest.Start(t, 1, etcdtest.Options{})
	a, b := gateway(t, c.Endpoints(), "gw-a"), gateway(t, c.Endpoints(), "gw-b")
	da, err := a.Directory()
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Directory()
	if err != nil {
		t.Fatal(err)
	}
	var _ state.Directory = da
	type event struct{ on, id, by string }
	events := make(chan event, 10)
	da.OnReplaced(func(id, by string) { events <- event{"gw-a", id, by} })
	db.OnReplaced(func(id, by string) { events <- event{"gw-b", id, by} })

	da.Claim("laptop")
	within(t, 5*time.Second, "gw-b sees gw-a hold laptop", func() bool { h, _ := db.Holder("laptop"); return h == "gw-a" })
	start := time.Now()
	db.Claim("laptop")
	select {
	case ev := <-events:
		if ev != (event{"gw-a", "laptop", "gw-b"}) {
			t.Fatalf("replaced: %+v; want gw-a told that gw-b took laptop", ev)
		}
		t.Logf("gw-a told to close its older session after %v", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("gw-a not told within 5s that gw-b took laptop")
	}
	da.Release("laptop") // gw-a's session ends: gw-b's claim stays
	within(t, 5*time.Second, "gw-a sees gw-b hold laptop", func() bool { h, _ := da.Holder("laptop"); return h == "gw-b" })
	time.Sleep(200 * time.Millisecond)
	if h, _ := db.Holder("laptop"); h != "gw-b" {
		t.Fatalf("after gw-a's release, holder %q; want gw-b", h)
	}
	db.Release("laptop")
	within(t, 5*time.Second, "laptop released everywhere", func() bool {
		_, okA := da.Holder("laptop")
		_, okB := db.Holder("laptop")
		return !okA && !okB
	})

	// Both at once, ten times: one side is told each time, never both.
	for i := range 10 {
		id := fmt.Sprintf("phone%d", i)
		var wg sync.WaitGroup
		wg.Go(func() { da.Claim(id) })
		wg.Go(func() { db.Claim(id) })
		wg.Wait()
		var ev event
		select {
		case ev = <-events:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s claimed on both gateways: neither told to close", id)
		}
		select {
		case ev2 := <-events:
			t.Fatalf("%s: both sessions closed (%+v, %+v)", id, ev, ev2)
		case <-time.After(300 * time.Millisecond):
		}
		survivor := "gw-a"
		if ev.on == "gw-a" {
			survivor = "gw-b"
		}
		within(t, 5*time.Second, "both see the survivor", func() bool {
			ha, _ := da.Holder(id)
			hb, _ := db.Holder(id)
			return ha == survivor && hb == survivor
		})
	}
}

// TestEtcdGatewayDies: a gateway whose etcd lease expires (its process
// gone: no more keepalives) loses its live address claims and directory
// entries after the TTL, while the identity keeps its address.
func TestEtcdGatewayDies(t *testing.T) {
	c := etcdtest.Start(t, 1, etcdtest.Options{})
	a, b := gateway(t, c.Endpoints(), "gw-a"), gateway(t, c.Endpoints(), "gw-b")
	la, da := shared(t, a)
	lb, db := shared(t, b)
	within(t, 5*time.Second, "both gateways live", func() bool { return len(b.Gateways()) == 2 && len(a.Gateways()) == 2 })
	addr, err := la.Assign("laptop")
	if err != nil {
		t.Fatal(err)
	}
	da.Claim("laptop")
	within(t, 5*time.Second, "gw-a's live claim of laptop's address", func() bool {
		g, ok, _ := lb.LiveClaim(addr)
		return ok && g == "gw-a"
	})
	// gw-a dies: its client goes away without revoking its lease.
	a.Client().Close()
	dead := time.Now()
	d := within(t, 10*time.Second, "gw-a's live claim to expire", func() bool {
		_, ok, err := lb.LiveClaim(addr)
		return err == nil && !ok
	})
	t.Logf("live claim freed %v after gw-a died (TTL 2s)", d.Round(10*time.Millisecond))
	within(t, 5*time.Second, "gw-a out of the directory", func() bool { _, ok := db.Holder("laptop"); return !ok })
	// The gateways are followed by a watch of their own: the lease's
	// expiry reaches it in the same revision, but not necessarily by the
	// time the directory's watch has seen it.
	within(t, 5*time.Second, "gw-a out of the live gateways", func() bool {
		g := b.Gateways()
		return len(g) == 1 && g[0] == "gw-b"
	})
	if time.Since(dead) < time.Second {
		t.Fatalf("claims freed %v after gw-a died, before its lease could expire", time.Since(dead))
	}
	// The address stays laptop's: on gw-b it gets the same one, and
	// nobody else gets it.
	if got, ok := lb.Lookup("laptop"); !ok || got != addr {
		t.Fatalf("Lookup(laptop) on gw-b = %v, %v; want %v", got, ok, addr)
	}
	other, err := lb.Assign("phone")
	if err != nil || other == addr {
		t.Fatalf("Assign(phone) = %v, %v; want another address than laptop's %v", other, err, addr)
	}
	if got, err := lb.Assign("laptop"); err != nil || got != addr {
		t.Fatalf("Assign(laptop) on gw-b = %v, %v; want %v", got, err, addr)
	}
	db.Claim("laptop")
	within(t, 5*time.Second, "gw-b's live claim", func() bool {
		g, ok, _ := lb.LiveClaim(addr)
		return ok && g == "gw-b"
	})
}

// crlPEM signs a CRL revoking certs, numbered n.
func crlPEM(t *testing.T, ca *certstest.CA, dir string, n int64, revoked ...tls.Certificate) []byte {
	t.Helper()
	req := certs.CRLRequest{Number: big.NewInt(n)}
	for _, c := range revoked {
		req.Revoked = append(req.Revoked, certstest.RevokedEntry(c, time.Now()))
	}
	path := filepath.Join(dir, fmt.Sprintf("crl%d.pem", n))
	ca.WriteCRL(t, path, req)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEtcdRevocation: a CRL published through one gateway is enforced
// by another within seconds, with the file backend's checks: an
// unpublished, forged or older CRL is refused (fail closed).
func TestEtcdRevocation(t *testing.T) {
	c := etcdtest.Start(t, 1, etcdtest.Options{})
	a, b := gateway(t, c.Endpoints(), "gw-a"), gateway(t, c.Endpoints(), "gw-b")
	ca, other := certstest.NewCA(t), certstest.NewCA(t)
	dir := t.TempDir()
	laptop, stolen := ca.ClientCert(t, "laptop"), ca.ClientCert(t, "stolen")
	if _, err := b.Revocation(ca.Cert); err == nil {
		t.Fatalf("Revocation with no CRL published = %v; want an error (fail closed)", err)
	}
	ctx := t.Context()
	if _, err := a.PublishCRL(ctx, []byte("junk"), ca.Cert); err == nil {
		t.Fatal("PublishCRL(junk): no error")
	}
	if _, err := a.PublishCRL(ctx, crlPEM(t, other, dir, 1), ca.Cert); err == nil {
		t.Fatal("PublishCRL of another CA's CRL: no error")
	}
	if _, err := a.PublishCRL(ctx, crlPEM(t, ca, dir, 1), ca.Cert); err != nil {
		t.Fatal(err)
	}
	var rev state.Revocation
	rev, err := b.Revocation(ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(c tls.Certificate) tls.ConnectionState {
		return tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c.Leaf, ca.Cert}}}
	}
	if err := rev.VerifyConnection(conn(stolen)); err != nil {
		t.Fatalf("stolen before its revocation: %v", err)
	}
	if _, err := a.PublishCRL(ctx, crlPEM(t, ca, dir, 2, stolen), ca.Cert); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.CRLChanged(): // the server checks its sessions on this
	case <-time.After(5 * time.Second):
		t.Fatal("gw-b not told within 5s that the CRL changed")
	}
	d := within(t, 5*time.Second, "gw-b to refuse stolen", func() bool {
		rev.ReloadIfChanged() // what the server's check does every --crl-check
		return errors.Is(rev.VerifyConnection(conn(stolen)), certs.ErrRevoked)
	})
	t.Logf("revocation published on gw-a enforced on gw-b after %v", d.Round(time.Millisecond))
	if err := rev.VerifyConnection(conn(laptop)); err != nil {
		t.Fatalf("laptop: %v", err)
	}
	if _, err := a.PublishCRL(ctx, crlPEM(t, ca, dir, 1), ca.Cert); err == nil {
		t.Fatal("publishing an older CRL (number 1 over 2): no error")
	}
	// A forged CRL written to the key directly (not through PublishCRL)
	// fails closed on every gateway, as a forged file does.
	if _, err := a.Client().Put(ctx, "/test/crl", string(crlPEM(t, other, dir, 3))); err != nil {
		t.Fatal(err)
	}
	within(t, 5*time.Second, "gw-b to refuse everyone", func() bool {
		rev.ReloadIfChanged()
		return errors.Is(rev.VerifyConnection(conn(laptop)), certs.ErrNoValidCRL)
	})
	if _, err := a.Client().Delete(ctx, "/test/crl"); err != nil {
		t.Fatal(err)
	}
	within(t, 5*time.Second, "a removed CRL to refuse everyone", func() bool {
		rev.ReloadIfChanged()
		err := rev.VerifyConnection(conn(laptop))
		return errors.Is(err, certs.ErrNoValidCRL)
	})
}

// TestEtcdTicketKeys: every gateway has the same keys, rotated by one
// leader; when it goes, another takes over; a ticket from one gateway
// resumes on the other.
func TestEtcdTicketKeys(t *testing.T) {
	c := etcdtest.Start(t, 1, etcdtest.Options{})
	fast := func(o *state.EtcdOptions) { o.TicketRotation, o.TicketLifetime = 2*time.Second, 10*time.Second }
	a, b := gateway(t, c.Endpoints(), "gw-a", fast), gateway(t, c.Endpoints(), "gw-b", fast)
	ka, err := a.TicketKeys()
	if err != nil {
		t.Fatal(err)
	}
	kb, err := b.TicketKeys()
	if err != nil {
		t.Fatal(err)
	}
	var _ state.TicketKeys = ka
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	first, err := ka.WaitKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kb.WaitKeys(ctx); err != nil {
		t.Fatal(err)
	}
	same := func() bool {
		x, err1 := ka.Keys()
		y, err2 := kb.Keys()
		if err1 != nil || err2 != nil || len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	within(t, 3*time.Second, "the same keys on both", same)

	// A ticket from gw-a resumes on gw-b.
	ca := certstest.NewCA(t)
	srvA, srvB := ca.ServerConfig(t, "vpn.test"), ca.ServerConfig(t, "vpn.test")
	keysA, _ := ka.Keys()
	keysB, _ := kb.Keys()
	srvA.SetSessionTicketKeys(keysA)
	srvB.SetSessionTicketKeys(keysB)
	cl := ca.ClientConfig(t, "laptop", "vpn.test")
	cl.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	if handshake(t, srvA, cl) {
		t.Fatal("first handshake resumed")
	}
	if !handshake(t, srvB, cl) {
		t.Fatal("a ticket sealed on gw-a did not resume on gw-b")
	}
	// The rate across gateways: every client's ticket from one gateway
	// resumes on the other (without shared keys, none would).
	resumed := 0
	const clients = 10
	for i := range clients {
		cl := ca.ClientConfig(t, fmt.Sprintf("client%d", i), "vpn.test")
		cl.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		from, to := srvA, srvB
		if i%2 == 1 {
			from, to = srvB, srvA
		}
		handshake(t, from, cl)
		if handshake(t, to, cl) {
			resumed++
		}
	}
	t.Logf("resumption across gateways: %d of %d", resumed, clients)
	if resumed != clients {
		t.Fatalf("resumption across gateways: %d of %d", resumed, clients)
	}

	// Rotation: a new first key on both, the old one kept.
	within(t, 6*time.Second, "a rotation", func() bool {
		x, err := ka.Keys()
		return err == nil && x[0] != first[0] && same()
	})
	x, _ := ka.Keys()
	if len(x) < 2 || x[1] != first[0] {
		t.Fatalf("after a rotation: %d keys, the first key second: %v", len(x), len(x) > 1 && x[1] == first[0])
	}
	// One leader; it goes, the other rotates.
	watcher, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	leader := func() string {
		resp, err := watcher.Get(t.Context(), "/test/tickets-leader/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
		if err != nil || len(resp.Kvs) == 0 {
			return ""
		}
		return string(resp.Kvs[0].Value)
	}
	l := leader()
	if l != "gw-a" && l != "gw-b" {
		t.Fatalf("leader %q", l)
	}
	gone, stay := a, kb
	if l == "gw-b" {
		gone, stay = b, ka
	}
	gone.Close()
	within(t, 5*time.Second, "the other gateway to lead", func() bool { return leader() != l && leader() != "" })
	cur, _ := stay.Keys()
	within(t, 6*time.Second, "a rotation by the new leader", func() bool {
		y, err := stay.Keys()
		return err == nil && y[0] != cur[0]
	})
}

// TestEtcdOutage: with the store down a gateway keeps its known
// identities (and their claims, written when it is back), refuses new
// ones and counts it, says so in Health, and catches up after: the lease
// lost in the outage is granted anew, the claims are written again, and
// nothing is leased twice.
func TestEtcdOutage(t *testing.T) {
	c := etcdtest.Start(t, 1, etcdtest.Options{})
	a := gateway(t, c.Endpoints(), "gw-a")
	la, da := shared(t, a)
	known, err := la.Assign("laptop")
	if err != nil {
		t.Fatal(err)
	}
	da.Claim("laptop")
	var replaced atomic.Bool
	da.OnReplaced(func(string, string) { replaced.Store(true) })

	c.Stop()
	within(t, 5*time.Second, "the store reported down", func() bool { return !a.Health().Up })
	if got, err := la.Assign("laptop"); err != nil || got != known {
		t.Fatalf("known identity during the outage: %v, %v; want %v", got, err, known)
	}
	start := time.Now()
	_, err = la.Assign("newcomer")
	if !errors.Is(err, state.ErrStoreUnavailable) {
		t.Fatalf("new identity during the outage: %v; want ErrStoreUnavailable", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("refusing a new identity took %v; want at once", d)
	}
	if _, err := la.Pin("printer", netip.MustParseAddr("100.64.0.200")); !errors.Is(err, state.ErrStoreUnavailable) {
		t.Fatalf("an address move during the outage: %v; want ErrStoreUnavailable", err)
	}
	if h := a.Health(); h.Refusals < 2 || h.Err == "" {
		t.Fatalf("health during the outage: %+v; want 2 refusals and the error", h)
	}
	// Claims made during the outage do not block, and are written later.
	claimed := make(chan struct{})
	go func() {
		da.Claim("tablet")
		da.Release("laptop")
		da.Claim("laptop")
		close(claimed)
	}()
	select {
	case <-claimed:
	case <-time.After(time.Second):
		t.Fatal("Claim blocked during the outage")
	}
	time.Sleep(3 * time.Second) // longer than the TTL: the gateway's lease is gone

	c.Restart(t)
	within(t, 10*time.Second, "the store back up", func() bool { return a.Health().Up })
	b := gateway(t, c.Endpoints(), "gw-b")
	lb, db := shared(t, b)
	within(t, 10*time.Second, "gw-a's claims written again", func() bool {
		h1, _ := db.Holder("laptop")
		h2, _ := db.Holder("tablet")
		g, ok, _ := lb.LiveClaim(known)
		return h1 == "gw-a" && h2 == "gw-a" && ok && g == "gw-a"
	})
	if a.Health().LeaseLost == 0 {
		t.Error("the lease outlived an outage longer than its TTL")
	}
	n, err := la.Assign("newcomer")
	if err != nil || n == known {
		t.Fatalf("new identity after the outage: %v, %v", n, err)
	}
	if replaced.Load() {
		t.Error("a session was told it was replaced, with no other gateway")
	}
	if got, _ := lb.Lookup("newcomer"); got != n {
		within(t, 5*time.Second, "gw-b sees the newcomer", func() bool { got, _ := lb.Lookup("newcomer"); return got == n })
	}
}

// TestEtcdMemberDown: with one member of three down (the first, often
// etcd's leader), nothing changes: new leases (retried past the requests
// a dead leader fails), claims and the health.
func TestEtcdMemberDown(t *testing.T) {
	c := etcdtest.Start(t, 3, etcdtest.Options{})
	a := gateway(t, c.Endpoints(), "gw-a", func(o *state.EtcdOptions) { o.Timeout = 3 * time.Second })
	la, da := shared(t, a)
	first, err := la.Assign("laptop")
	if err != nil {
		t.Fatal(err)
	}
	c.Members[0].Kill()
	for i := range 5 {
		id := fmt.Sprintf("phone%d", i)
		addr, err := la.Assign(id)
		if err != nil || addr == first {
			t.Fatalf("Assign(%s) with a member down = %v, %v", id, addr, err)
		}
		da.Claim(id)
	}
	b := gateway(t, c.Endpoints()[1:], "gw-b")
	_, db := shared(t, b)
	within(t, 10*time.Second, "gw-a's claims seen through the other members", func() bool {
		h, _ := db.Holder("phone4")
		return h == "gw-a"
	})
	if h := a.Health(); !h.Up || h.Refusals != 0 {
		t.Fatalf("health with one member of three down: %+v", h)
	}
}
