// Package tunnel is tlsvpn's data plane and protocol: frames and control
// messages, Session (one peer's packets between its transport and the TUN
// device), Mux (the TUN device's packets to the sessions), and the Server
// and Client that make sessions. It does no file I/O and no system
// configuration; its callers hand it a TUN device and connections.
//
// A Session runs over a Transport (transport.go): an ordered byte stream
// of frames to one authenticated peer, with gathered writes (Hold, Flush)
// for each batch, an abrupt and a graceful close, the facts of the
// connection (Info) and of its keys (Usage), and StartData, the moment the
// data phase begins. The session sees nothing under it. TLS 1.3 over TCP
// is the one transport today (transport_tls.go): crypto/tls makes the
// handshake on a BatchConn (conn.go), and StartData hands the stream over
// to this package's own record layer, RecordConn (record.go), when that is
// proven safe. Client.Connect and the Server's accept path build it over
// whatever connection they are given, so a proxy dialer
// (ClientConfig.Dial) or a listener shared with a web server (Server.Serve)
// needs no change here; another transport implements Transport and is
// given to NewSession, with nothing in Session or Mux to change
// (transport_test.go runs sessions over an in-memory pipe without TLS).
package tunnel
