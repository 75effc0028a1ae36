package tunnel

import "testing"

// The session's hot path on the own record layer, the path every
// production session takes after the hand-over: BenchmarkSendPath and
// BenchmarkReceivePath measure it on a plain conn.

// BenchmarkRecordSendPath measures dispatch + framing + sealing + one
// gathered write for batches of 64 packets of 1400 bytes.
func BenchmarkRecordSendPath(b *testing.B) {
	dev := &discardDevice{}
	for range 64 {
		dev.pkts = append(dev.pkts, testPacket(allocServer, allocClient, 1400))
	}
	sink := &bufConn{buf: make([]byte, 0, 1<<20)}
	s := newAllocSession(b, nil, dev)
	tx, _ := recordConns(b, sink, nil)
	onRecords(s, tx)
	m := NewMux(dev, MuxConfig{})
	m.Add(s, allocClient)
	b.ReportAllocs()
	b.SetBytes(64 * 1400)
	for b.Loop() {
		sink.buf = sink.buf[:0]
		n, raw, _ := m.read()
		m.dispatch(n, raw)
		for len(s.queue) > 0 {
			if err := s.writeChunks(<-s.queue); err != nil {
				b.Fatal(err)
			}
		}
		// What was sealed is thrown away: keep the key far from its
		// record limit however long the benchmark runs.
		tx.wmu.Lock()
		tx.txSeq = 0
		tx.wmu.Unlock()
	}
}

// BenchmarkRecordReceivePath measures opening records, parsing frames,
// checks and batching for 64 packets of 1400 bytes arriving in full
// records. (A few million iterations stay far below the per-key record
// limit.)
func BenchmarkRecordReceivePath(b *testing.B) {
	src := &sealedLoop{sink: &bufConn{buf: make([]byte, 0, 1<<20)}}
	for i := range 64 {
		src.data = AppendFrame(src.data, TypeData, i == 63, testPacket(allocClient, allocServer, 1400))
	}
	s := newAllocSession(b, nil, &discardDevice{})
	w, rx := recordConns(b, src.sink, src)
	src.w = w
	onRecords(s, rx)
	b.ReportAllocs()
	b.SetBytes(64 * 1400)
	for b.Loop() {
		for range 64 {
			if err := s.readFrame(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
