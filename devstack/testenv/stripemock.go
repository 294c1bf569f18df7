package testenv

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// StripeMockVersion is the stripe-mock the tests run: the stand-in stripe-go's own tests
// use, which checks every request against Stripe's OpenAPI document (unknown parameters
// and wrong types are refused) and answers with fixtures of the right shape. It keeps no
// state: behaviour is localstripe's part.
const StripeMockVersion = "v0.203.0"

var stripeMockBuild sync.Mutex

// StripeMock starts stripe-mock on a port of its own for t and returns its base URL. The
// first run builds it from the Go module proxy into the repository's .data/bin.
func StripeMock(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(Root(t), ".data", "bin", "stripe-mock-"+StripeMockVersion)
	stripeMockBuild.Lock()
	if _, err := os.Stat(bin); err != nil {
		dir := t.TempDir()
		cmd := exec.Command("go", "install", "github.com/stripe/stripe-mock@"+StripeMockVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOWORK=off", "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			stripeMockBuild.Unlock()
			t.Fatalf("testenv: building stripe-mock %s: %v\n%s", StripeMockVersion, err, out)
		}
		if err := os.MkdirAll(filepath.Dir(bin), 0o755); err == nil {
			err = os.Rename(filepath.Join(dir, "stripe-mock"), bin)
		}
		if _, err := os.Stat(bin); err != nil {
			stripeMockBuild.Unlock()
			t.Fatalf("testenv: stripe-mock: %v", err)
		}
	}
	stripeMockBuild.Unlock()

	port := FreePort(t)
	cmd := exec.Command(bin, "-http-addr", fmt.Sprintf("127.0.0.1:%d", port))
	cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start stripe-mock: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	if !Eventually(30*time.Second, 50*time.Millisecond, func() bool {
		resp, err := http.Get(url + "/v1/payment_intents/pi_123")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	}) {
		t.Fatalf("testenv: stripe-mock did not answer at %s within 30s", url)
	}
	return url
}
