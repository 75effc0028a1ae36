//go:build unix

package server

import (
	"os"
	"syscall"
)

// flockExclusive takes an exclusive lock on f without waiting; it fails
// with EWOULDBLOCK if another open file description holds one. The kernel
// drops it when f is closed, also when the process dies.
func flockExclusive(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
