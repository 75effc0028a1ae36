package client

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestServerOrder walks the order policy through a client's life with a
// shuffle that keeps the list order, so each step's order is exact: the
// server of the last session first, a server that connected but gave no
// session last, 'reconnect' moving on or to a named server, and a
// rotation staying put.
func TestServerOrder(t *testing.T) {
	o := newServerOrder(3)
	o.shuffle = func(int, func(i, j int)) {}
	steps := []struct {
		name string
		do   func()
		stay bool
		want []int
	}{
		{"first attempt: the draw", nil, false, []int{0, 1, 2}},
		{"server 1 came up: it goes first", func() { o.connected(1); o.up() }, false, []int{1, 0, 2}},
		{"a rotation stays on server 1", nil, true, []int{1}},
		{"server 1 connected, no session: last", func() { o.connected(1) }, false, []int{0, 2, 1}},
		{"server 2 came up", func() { o.connected(2); o.up() }, false, []int{2, 0, 1}},
		{"reconnect: another server than 2", func() { o.moveOn() }, false, []int{0, 1, 2}},
		{"reconnect to server 1", func() { o.choose(1) }, false, []int{1, 0, 2}},
		{"server 1 came up after all", func() { o.connected(1); o.up() }, false, []int{1, 0, 2}},
	}
	for _, s := range steps {
		if s.do != nil {
			s.do()
		}
		if got := o.next(s.stay); !slices.Equal(got, s.want) {
			t.Fatalf("%s: next(%v) = %v, want %v", s.name, s.stay, got, s.want)
		}
	}
}

// TestServerOrderRandom: with no server preferred, each is tried first
// about equally often (seeded, so deterministic), every server is in
// every order once, and the last good one is always first.
func TestServerOrderRandom(t *testing.T) {
	o := newServerOrder(4)
	r := rand.New(rand.NewPCG(1, 2))
	o.shuffle = r.Shuffle
	first := make([]int, 4)
	const draws = 4000
	for range draws {
		order := o.next(false)
		if sorted := slices.Sorted(slices.Values(order)); !slices.Equal(sorted, []int{0, 1, 2, 3}) {
			t.Fatalf("next() = %v, want each server once", order)
		}
		first[order[0]]++
	}
	for i, n := range first {
		if n < draws/4*8/10 || n > draws/4*12/10 {
			t.Errorf("server %d first in %d of %d draws, want about %d: %v", i, n, draws, draws/4, first)
		}
	}
	o.connected(3)
	o.up()
	seen := map[string]bool{}
	for range 100 {
		order := o.next(false)
		if order[0] != 3 {
			t.Fatalf("next() = %v, want the last good server 3 first", order)
		}
		seen[fmt.Sprint(order[1:])] = true
	}
	if len(seen) < 2 {
		t.Errorf("the servers after the last good one are always in the order %v; want a fresh draw", seen)
	}
}

// TestParseServers: the certificate name of each server is its host
// unless --server-name names one for all.
func TestParseServers(t *testing.T) {
	got, err := parseServers([]string{"vpn1.example.com:443", "192.0.2.7:https"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if got[0].name != "vpn1.example.com" || got[1].name != "192.0.2.7" || got[1].port != 443 {
		t.Errorf("parseServers = %+v", got)
	}
	got, err = parseServers([]string{"vpn1.example.com:443", "192.0.2.7:443"}, "vpn.example.com")
	if err != nil || got[0].name != "vpn.example.com" || got[1].name != "vpn.example.com" {
		t.Errorf("parseServers with a server name = %+v, %v", got, err)
	}
	for _, bad := range [][]string{nil, {":443"}, {"a:443", "a:443"}, {"a:0"}} {
		if _, err := parseServers(bad, ""); err == nil {
			t.Errorf("parseServers(%q) accepted", bad)
		}
	}
}
