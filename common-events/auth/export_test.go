package auth

import "time"

// SetClock makes v read the time from now: for tests of what happens as time passes.
func (v *Verifier) SetClock(now func() time.Time) { v.now = now }
