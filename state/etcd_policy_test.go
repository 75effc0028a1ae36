package state_test

import (
	"bytes"
	"testing"
	"time"

	"tlsvpn/state"
	"tlsvpn/state/etcdtest"
)

// TestEtcdPolicy: a gateway that starts before any policy is published
// sees none; a publication reaches it (and one that starts later) with a
// new revision each time; a deleted key is "none" again; a policy over
// the size limit is refused without writing anything.
func TestEtcdPolicy(t *testing.T) {
	c := etcdtest.Start(t, 1, etcdtest.Options{})
	a := gateway(t, c.Endpoints(), "gw-a")
	pa, err := a.Policy()
	if err != nil {
		t.Fatal(err)
	}
	if data, rev := pa.Current(); rev != 0 || data != nil {
		t.Fatalf("before any publication: %q at revision %d; want none", data, rev)
	}
	if pa.Key() != "/test/clients" {
		t.Errorf("key %q; want /test/clients", pa.Key())
	}
	ctx := t.Context()
	v1 := []byte("laptop:\n  address: 100.64.0.10\n")
	rev1, err := state.PublishPolicy(ctx, a.Client(), "/test", v1)
	if err != nil {
		t.Fatal(err)
	}
	within(t, 5*time.Second, "gw-a to see the policy", func() bool {
		data, rev := pa.Current()
		return rev == rev1 && bytes.Equal(data, v1)
	})
	b := gateway(t, c.Endpoints(), "gw-b")
	pb, err := b.Policy()
	if err != nil {
		t.Fatal(err)
	}
	if data, rev := pb.Current(); rev != rev1 || !bytes.Equal(data, v1) {
		t.Fatalf("gw-b started after the publication: %q at %d; want %q at %d", data, rev, v1, rev1)
	}
	// The same bytes again are a new publication (gateways apply it
	// again, which changes nothing).
	v2 := []byte("laptop:\n  address: 100.64.0.11\n")
	rev2, err := state.PublishPolicy(ctx, b.Client(), "/test/", v2)
	if err != nil || rev2 <= rev1 {
		t.Fatalf("second publication: revision %d, %v; want > %d", rev2, err, rev1)
	}
	for _, p := range []*state.EtcdPolicy{pa, pb} {
		within(t, 5*time.Second, "both gateways to see the second policy", func() bool {
			data, rev := p.Current()
			return rev == rev2 && bytes.Equal(data, v2)
		})
	}
	select {
	case <-pa.Changed():
	default:
		t.Error("gw-a's Changed has no news after a publication")
	}
	if _, err := state.PublishPolicy(ctx, a.Client(), "/test/", make([]byte, state.MaxPolicySize+1)); err == nil {
		t.Error("a policy over MaxPolicySize was published")
	}
	if _, err := a.Client().Delete(ctx, state.PolicyKey("/test/")); err != nil {
		t.Fatal(err)
	}
	within(t, 5*time.Second, "gw-b to see the policy deleted", func() bool {
		data, rev := pb.Current()
		return rev == 0 && data == nil
	})
}
