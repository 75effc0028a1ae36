package certs

import (
	"fmt"
	"os"
)

// CheckKeyFileMode returns an error when the private key file at path (after symlinks) has
// permission bits for its group or others (mode & 0o077), saying which mode it has and how to
// fix it. Anyone who can read a key can act as its owner, so daemons warn at start; the
// files 'tunneld pki' writes have mode 0600 and pass. It also fails when path cannot be
// inspected.
func CheckKeyFileMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return pathError("check permissions of private key", path, err)
	}
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		return fmt.Errorf("private key %s has mode %04o, so its group or others can access it: run chmod 600 %s", path, mode, path)
	}
	return nil
}
