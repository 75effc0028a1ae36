package tunnel

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/tls"
	"fmt"
	"reflect"
	"testing"

	"tlsvpn/tunnel/internal/aesgcm"
)

// TestDefaultAESGCMIsGos pins the default AEAD of the data phase: with
// default configurations both sides hand their records over to the own
// record layer and seal and open them with Go's AES-GCM (crypto/cipher),
// never tlsvpn's own assembly; only OwnAESGCM selects that, and only
// where aesgcm.Check allows it. Both AEADs produce the same bytes, so no
// other test would notice a change of default.
func TestDefaultAESGCMIsGos(t *testing.T) {
	if err := OwnRecordLayer(); err != nil {
		t.Skipf("the own record layer is off in this process (%v)", err)
	}
	key := make([]byte, 16)
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	std, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, own := range []bool{false, true} {
		t.Run(fmt.Sprintf("own_aes_gcm=%v", own), func(t *testing.T) {
			want := reflect.TypeOf(std)
			if own {
				if err := aesgcm.Check(); err != nil {
					t.Skipf("tlsvpn's own AES-GCM cannot run on this CPU or in this process (%v): "+
						"only the default half of this test applies here", err)
				}
				a, err := aesgcm.New(key)
				if err != nil {
					t.Fatal(err)
				}
				want = reflect.TypeOf(a)
			}
			p := startLivePair(t,
				func(c *ServerConfig) { c.OwnAESGCM = own },
				func(c *ClientConfig) { c.OwnAESGCM = own })
			for _, side := range []struct {
				name string
				s    *Session
			}{{"server", p.srvSess}, {"client", p.cliSess}} {
				rc := side.s.t.(*tlsTransport).rcLoaded.Load()
				if rc == nil {
					t.Fatalf("%s: the data phase was not handed over to the own record layer", side.name)
				}
				if suite := side.s.info.TLS.CipherSuite; suite == tls.TLS_CHACHA20_POLY1305_SHA256 {
					t.Skipf("negotiated %s (no AES hardware?): no AES-GCM to check", tls.CipherSuiteName(suite))
				}
				if got := rc.OwnAESGCM(); got != own {
					t.Errorf("%s: RecordConn.OwnAESGCM() = %v, want %v", side.name, got, own)
				}
				rc.wmu.Lock()
				tx := rc.tx
				rc.wmu.Unlock()
				for dir, k := range map[string]*trafficKeys{"sending": tx, "receiving": rc.rx} {
					if got := reflect.TypeOf(k.aead); got != want || k.own != own {
						t.Errorf("%s: %s AEAD is %v (own %v), want %v (own %v)", side.name, dir, got, k.own, want, own)
					}
				}
			}
		})
	}
}
