package tunnel

import "sync/atomic"

// Stats counts what a tunnel endpoint did. Every field is updated
// atomically and may be read at any time; the data path adds once per
// batch, not once per packet. One Stats is shared by all sessions of a
// server.
type Stats struct {
	TxPackets atomic.Uint64 // packets sent to peers
	TxBytes   atomic.Uint64 // IP bytes sent to peers (without framing)
	RxPackets atomic.Uint64 // packets received from peers and written to the TUN
	RxBytes   atomic.Uint64 // IP bytes received from peers

	DropSpoofed   atomic.Uint64 // inner source address not allowed for the session
	DropMalformed atomic.Uint64 // not a well-formed IPv4/IPv6 packet
	DropNoSession atomic.Uint64 // no session for the destination address
	DropQueueFull atomic.Uint64 // session queue full (slow peer)
	DropTUNWrite  atomic.Uint64 // the TUN device refused a batch
	DropNoGSO     atomic.Uint64 // super-packet for a session that cannot take one (mode change)

	SessionsOpened    atomic.Uint64
	SessionsResumed   atomic.Uint64 // of SessionsOpened: the TLS handshake resumed a session (no certificate exchange)
	SessionsClosed    atomic.Uint64
	SessionsReplaced  atomic.Uint64
	HandshakeFailures atomic.Uint64 // TLS or protocol handshake did not complete
	AcceptErrors      atomic.Uint64 // accept failed (out of descriptors, say); the server backs off and goes on
	RefusedDraining   atomic.Uint64 // connections closed at once because the server is draining
	ProtocolErrors    atomic.Uint64 // sessions closed for a peer's protocol violation
	KeepaliveTimeouts atomic.Uint64
	ControlFrames     atomic.Uint64 // control frames received
	Panics            atomic.Uint64 // recovered panics (each closed only its session)
	AdvertiseRefused  atomic.Uint64 // advertised networks refused by policy
	// RecordHandOvers counts sessions whose data phase runs on this
	// package's record layer rather than on crypto/tls (record.go).
	RecordHandOvers atomic.Uint64
	// RecordHandOverRefusals counts sessions that stayed on crypto/tls
	// because the hand-over could not be proven safe (conn.go).
	RecordHandOverRefusals atomic.Uint64
	// KeyUpdatesSent and KeyUpdatesReceived count TLS KeyUpdate messages
	// sent and received by the own record layer.
	KeyUpdatesSent     atomic.Uint64
	KeyUpdatesReceived atomic.Uint64
}
