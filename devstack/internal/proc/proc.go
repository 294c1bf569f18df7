// Package proc stops the processes devstack runs.
package proc

import (
	"os"
	"time"
)

// Grace is how long a process has to end after being asked before it is killed.
const Grace = 30 * time.Second

// Signal sends sig to p and waits for it to end (done, fed by its cmd.Wait), killing it
// after Grace; it returns what the wait returned.
func Signal(p *os.Process, done <-chan error, sig os.Signal) error {
	_ = p.Signal(sig)
	select {
	case err := <-done:
		return err
	case <-time.After(Grace):
		_ = p.Kill()
		return <-done
	}
}
