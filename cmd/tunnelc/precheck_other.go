//go:build !linux

package main

// haveNetAdmin does not check elsewhere: tun.Open says what it needs.
func haveNetAdmin() (bool, error) { return true, nil }
