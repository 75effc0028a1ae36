package client

import (
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
)

// Several servers (--server repeated): which one each attempt tries
// first.
//
// The policy: the server of the last session that came up goes first
// (it worked, and staying keeps the tunnel address its lease holds); the
// others follow in a random order drawn afresh for every attempt, so the
// clients of a server that went down spread over the rest instead of all
// landing on the second in the list. A server whose TCP connection
// succeeded but gave no session (TLS or protocol handshake failed) loses
// its place and goes last on the next attempt, so one broken server
// cannot hold the client. 'tunnelc reconnect' moves on: without a server
// the one in use goes last, with one that server goes first. A rotation
// (fresh keys while a session is up) stays on the server in use.
//
// What worked last is remembered for the life of the process only: a
// restarted tunnelc draws a new order, which spreads the clients of a
// fleet again after, say, a server upgrade.

// serverSpec is one --server.
type serverSpec struct {
	spec string // HOST:PORT as given: logs, status, 'tunnelc reconnect SERVER'
	host string
	port uint16
	name string // the name its certificate must carry: --server-name, else host
}

// parseServers checks the --server values and returns them with the
// certificate name of each: serverName when given, else the host.
func parseServers(list []string, serverName string) ([]serverSpec, error) {
	if len(list) == 0 {
		return nil, fmt.Errorf("--server is required, e.g. --server vpn.example.com:443")
	}
	var out []serverSpec
	for _, s := range list {
		host, portStr, err := net.SplitHostPort(s)
		if err != nil || host == "" {
			return nil, fmt.Errorf("--server %q: want HOST:PORT, e.g. vpn.example.com:443", s)
		}
		port, err := ServerPort(portStr)
		if err != nil {
			return nil, fmt.Errorf("--server %q: %v", s, err)
		}
		if slices.ContainsFunc(out, func(o serverSpec) bool { return o.spec == s }) {
			return nil, fmt.Errorf("--server %q is given twice", s)
		}
		name := serverName
		if name == "" {
			name = host
		}
		out = append(out, serverSpec{spec: s, host: host, port: port, name: name})
	}
	return out, nil
}

// serverOrder is the order policy's state. It is not safe for
// concurrent use (serverDialer guards it). Indexes are into the server
// list; -1 is none.
type serverOrder struct {
	n       int
	prefer  int // tried first: the server of the last session, or the one asked for
	avoid   int // tried last: failed after connecting, or moved away from
	pending int // connected, no session yet
	inUse   int // the server of the current (or last) session
	// shuffle is rand.Shuffle; tests make it deterministic.
	shuffle func(n int, swap func(i, j int))
}

func newServerOrder(n int) *serverOrder {
	return &serverOrder{n: n, prefer: -1, avoid: -1, pending: -1, inUse: -1, shuffle: rand.Shuffle}
}

// next returns the servers in the order an attempt tries them. With
// stay (a rotation while a session is up) it is the server in use only.
func (o *serverOrder) next(stay bool) []int {
	if stay && o.inUse >= 0 {
		o.pending = -1
		return []int{o.inUse}
	}
	if o.pending >= 0 {
		// The last connection gave no session: that server goes last.
		if o.prefer == o.pending {
			o.prefer = -1
		}
		o.avoid, o.pending = o.pending, -1
	}
	rest := make([]int, 0, o.n)
	for i := range o.n {
		if i != o.prefer && i != o.avoid {
			rest = append(rest, i)
		}
	}
	o.shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	order := make([]int, 0, o.n)
	if o.prefer >= 0 {
		order = append(order, o.prefer)
	}
	order = append(order, rest...)
	if o.avoid >= 0 && o.avoid != o.prefer {
		order = append(order, o.avoid)
	}
	return order
}

// connected records that server i accepted the TCP connection.
func (o *serverOrder) connected(i int) { o.pending = i }

// up records that the last connection became a session: its server is
// the one in use and goes first from now on.
func (o *serverOrder) up() {
	if o.pending < 0 {
		return
	}
	o.prefer, o.inUse, o.pending = o.pending, o.pending, -1
	if o.avoid == o.prefer {
		o.avoid = -1
	}
}

// choose makes server i go first on the next attempt ('tunnelc
// reconnect SERVER').
func (o *serverOrder) choose(i int) {
	o.prefer = i
	if o.avoid == i {
		o.avoid = -1
	}
}

// moveOn makes the server in use go last on the next attempt ('tunnelc
// reconnect' with several servers).
func (o *serverOrder) moveOn() {
	if o.inUse >= 0 && o.n > 1 {
		o.prefer, o.avoid = -1, o.inUse
	}
}
