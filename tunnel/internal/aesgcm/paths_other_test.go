//go:build !amd64 || purego

package aesgcm

import "testing"

// paths runs f once: there is only crypto/cipher's GCM here.
func paths(t *testing.T, f func(t *testing.T)) { f(t) }

func forEachPath(f func()) { f() }

func narrow() (undo func(), ok bool) { return nil, false }
