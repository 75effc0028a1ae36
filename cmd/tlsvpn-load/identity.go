package main

import (
	"crypto/tls"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"tlsvpn/certs"
	"tlsvpn/tunnel"
)

// identity is one client: its certificate, TLS settings and source address.
// Held sessions and churn sessions each have their own, so the server sees
// as many distinct clients as the run opens.
type identity struct {
	idx   int
	name  string
	churn bool       // a churn session rather than a held one
	src   netip.Addr // local address to dial from; invalid: the kernel picks
	tls   *tls.Config
}

// mintIdentities issues one client certificate per identity from the CA in
// dir, in parallel: a 10,000-session run should not wait long for its
// certificates. The keys are ECDSA P-256 like those of 'tunneld pki issue',
// so the server's handshake cost is the one real clients give it.
func mintIdentities(o options) ([]*identity, time.Duration, error) {
	ca, err := certs.LoadCA(o.pki)
	if err != nil {
		return nil, 0, err
	}
	pool := ca.Pool()
	n := o.sessions + o.churn
	ids := make([]*identity, n)
	start := time.Now()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				name := fmt.Sprintf("%s%05d", o.namePrefix, i+1)
				// A short validity: these certificates live as long as the
				// process, and one day cannot outlive any CA.
				cert, err := ca.IssueCert(certs.IssueRequest{Name: name, Client: true, Days: 1, Algorithm: certs.ECDSA})
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("issue certificate %s: %w", name, err) })
					continue
				}
				cfg := certs.ClientConfigFrom(cert, pool, o.serverName)
				cfg.NextProtos = []string{tunnel.ALPN}
				if o.resume {
					// One cache per identity: tickets are bound to the
					// certificate they were issued for, as in tunnelc.
					cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
				}
				id := &identity{idx: i, name: name, churn: i >= o.sessions, tls: cfg}
				if len(o.sources) > 0 {
					id.src = o.sources[i%len(o.sources)]
				}
				ids[i] = id
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, 0, firstErr
	}
	return ids, time.Since(start), nil
}
