//go:build !linux

package platform

import "time"

// setUserTimeout does nothing where TCP_USER_TIMEOUT is Linux's alone: keepalives remain.
func setUserTimeout(uintptr, time.Duration) error { return nil }
