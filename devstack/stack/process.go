package stack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/orderflow/common-events/web"
	"github.com/orderflow/devstack/internal/proc"
)

// Service is one service process.
type Service struct {
	Name string
	URL  string
	bin  string
	env  []string
	log  io.Writer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
}

// Start runs the service and waits until it answers /readyz.
func (sv *Service) Start(ctx context.Context) error {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.cmd != nil {
		return fmt.Errorf("%s is already running", sv.Name)
	}
	cmd := exec.Command(sv.bin)
	cmd.Env = append(os.Environ(), sv.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", sv.Name, err)
	}
	go prefix(sv.log, sv.Name, pr)
	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pw.Close()
		done <- err
	}()
	sv.cmd, sv.done = cmd, done

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-done:
			sv.cmd = nil
			return fmt.Errorf("%s exited at start (%v): see its log above", sv.Name, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if resp, err := http.Get(sv.URL + web.ReadyPath); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 60s", sv.Name)
		}
	}
}

// Run runs the service's binary once with args (a command of its own, such as
// reconciliation-service's rebuild) and its settings, its output to out, and waits for it.
func (sv *Service) Run(ctx context.Context, out io.Writer, args ...string) error {
	cmd := exec.CommandContext(ctx, sv.bin, args...)
	sv.mu.Lock()
	cmd.Env = append(os.Environ(), sv.env...)
	sv.mu.Unlock()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %v: %w", sv.Name, args, err)
	}
	return nil
}

// PID is the service's process id, or 0 when it is not running.
func (sv *Service) PID() int {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.cmd == nil {
		return 0
	}
	return sv.cmd.Process.Pid
}

// Setenv changes a setting for the service's next start.
func (sv *Service) Setenv(key, value string) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	sv.env = append(sv.env, key+"="+value) // the last one wins
}

// Stop asks the service to shut down gracefully (SIGTERM) and waits for it.
func (sv *Service) Stop() error { return sv.signal(syscall.SIGTERM) }

// Kill ends the service at once (SIGKILL), as a crash would.
func (sv *Service) Kill() error { return sv.signal(syscall.SIGKILL) }

// Signal sends sig to the running service and returns at once (payment-service's
// simulated provider hangs on SIGUSR1 until SIGUSR2).
func (sv *Service) Signal(sig syscall.Signal) error {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.cmd == nil {
		return errors.New(sv.Name + " is not running")
	}
	return sv.cmd.Process.Signal(sig)
}

func (sv *Service) signal(sig syscall.Signal) error {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.cmd == nil {
		return nil
	}
	err := proc.Signal(sv.cmd.Process, sv.done, sig)
	sv.cmd = nil
	if sig == syscall.SIGKILL {
		return nil
	}
	return err
}

// prefix copies r to w line by line, each line prefixed with the service name.
func prefix(w io.Writer, name string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fmt.Fprintf(w, "%-20s | %s\n", name, sc.Text())
	}
	_, _ = io.Copy(io.Discard, r)
}

func portFree(host string, port int) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return ln.Close()
}
