// Package netnstest gives root tests a fresh network namespace of their own.
//
// New creates a uniquely named namespace (visible in `ip netns list` while
// the test runs) and removes it in t.Cleanup, even when the test fails
// midway; it skips the test only when the process is not root. Tests work
// inside the namespace without moving the test goroutine's thread:
// commands run through `ip netns exec` (Cmd, Run), netlink goes through a
// handle opened in the namespace (Handle), and sockets are created on a
// dedicated, locked OS thread (Do, Listen, Dial).
//
// The package is Linux-only; on other systems New skips the test.
// Production code must not import it.
package netnstest
