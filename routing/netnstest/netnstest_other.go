//go:build !linux

package netnstest

import "testing"

// NS is a network namespace; on this system none can be created.
type NS struct {
	// Name is the namespace name.
	Name string
}

// New skips the test: network namespaces require Linux.
func New(t testing.TB) *NS {
	t.Helper()
	t.Skip("netnstest: network namespaces require Linux")
	return nil
}
