package tunnel_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

// TestFIPSModeKeepsRecordsOnStdlib runs a client and a server in a child
// process with GODEBUG=fips140=on and =only: the data phase must stay on crypto/tls
// (whose AES-GCM is the FIPS module's) on both sides, and the tunnel must
// work.
func TestFIPSModeKeepsRecordsOnStdlib(t *testing.T) {
	if os.Getenv("TLSVPN_FIPS_CHILD") == "1" {
		if tunnel.OwnRecordLayer() == nil {
			t.Fatal("FIPS 140 mode is not on in the child")
		}
		srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
		cl := srv.StartClient(t, "laptop")
		me := cl.Config.Addr.Addr()
		up := tunneltest.UDP4(me, serverAddr, []byte("up"))
		cl.Dev.Inbound <- up
		tunneltest.Expect(t, srv.Dev.Outbound, up)
		down := tunneltest.UDP4(serverAddr, me, []byte("down"))
		srv.Dev.Inbound <- down
		tunneltest.Expect(t, cl.Dev.Outbound, down)
		if s, c := srv.Stats.RecordHandOvers.Load(), cl.Stats.RecordHandOvers.Load(); s != 0 || c != 0 {
			t.Fatalf("record hand-overs in FIPS mode: server %d, client %d; want none", s, c)
		}
		return
	}
	for _, mode := range []string{"on", "only"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFIPSModeKeepsRecordsOnStdlib$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "GODEBUG=fips140="+mode, "TLSVPN_FIPS_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestFIPSModeKeepsRecordsOnStdlib") {
			t.Fatalf("child with GODEBUG=fips140=%s: %v\n%s", mode, err, out)
		}
	}
}
