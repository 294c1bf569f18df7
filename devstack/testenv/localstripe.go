package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Localstripe is localstripe, a stateful fake Stripe server others wrote (the version
// tools/localstripe/requirements.txt pins), running for a test on a port of its own with
// its objects in a file of the test's, so Kill and Start keep them, as Stripe would.
type Localstripe struct {
	URL string

	t      testing.TB
	python string
	serve  string
	port   int
	store  string
	mu     sync.Mutex
	cmd    *exec.Cmd
}

var localstripeInstall sync.Mutex

// StartLocalstripe installs localstripe into the repository's .data on the first run
// (scripts/ensure-localstripe.sh) and starts it for t; it stops when t ends.
func StartLocalstripe(t testing.TB) *Localstripe {
	t.Helper()
	root := Root(t)
	localstripeInstall.Lock()
	cmd := exec.Command(filepath.Join(root, "scripts", "ensure-localstripe.sh"))
	cmd.Env = append(os.Environ(), "ORDERFLOW_DATA_DIR="+filepath.Join(root, ".data"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	localstripeInstall.Unlock()
	if err != nil {
		t.Fatalf("testenv: installing localstripe: %v\n%s", err, stderr.Bytes())
	}
	port := FreePort(t)
	ls := &Localstripe{
		URL: fmt.Sprintf("http://127.0.0.1:%d", port), t: t, python: strings.TrimSpace(string(out)),
		serve: filepath.Join(root, "tools", "localstripe", "serve.py"), port: port,
		store: filepath.Join(t.TempDir(), "localstripe.pickle"),
	}
	ls.Start()
	t.Cleanup(ls.Kill)
	return ls
}

// Start starts localstripe again after Kill, on the same port, with what it held.
func (ls *Localstripe) Start() {
	ls.t.Helper()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	cmd := exec.Command(ls.python, ls.serve, "--port", fmt.Sprint(ls.port), "--store", ls.store)
	cmd.Stdout, cmd.Stderr = ls.t.Output(), ls.t.Output()
	if err := cmd.Start(); err != nil {
		ls.t.Fatalf("testenv: start localstripe: %v", err)
	}
	ls.cmd = cmd
	if !Eventually(30*time.Second, 50*time.Millisecond, func() bool {
		resp, err := http.Get(ls.URL + "/v1/payment_intents/pi_none")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	}) {
		ls.t.Fatalf("testenv: localstripe did not answer at %s within 30s", ls.URL)
	}
}

// Kill stops localstripe at once (SIGKILL), as a crash would.
func (ls *Localstripe) Kill() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.cmd != nil {
		_ = ls.cmd.Process.Kill()
		_ = ls.cmd.Wait()
		ls.cmd = nil
	}
}

// API calls localstripe's API as a test's own Stripe client would, and decodes the 200
// answer into v (nil: no body wanted).
func (ls *Localstripe) API(t testing.TB, method, path string, form url.Values, v any) {
	t.Helper()
	req, err := http.NewRequest(method, ls.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("sk_test_123", "")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("localstripe: %s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if v == nil {
		return
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// Webhook has localstripe deliver the events of types to url, signed with secret, as a
// Stripe account's webhook endpoint does (a second after the event). A Kill forgets it.
func (ls *Localstripe) Webhook(t testing.TB, url_, secret string, types ...string) {
	t.Helper()
	form := url.Values{"url": {url_}, "secret": {secret}}
	for i, typ := range types {
		form.Set(fmt.Sprintf("events[%d]", i), typ)
	}
	ls.API(t, http.MethodPost, "/_config/webhooks/orderflow", form, nil)
}

// Card makes a PaymentMethod of one of Stripe's test card numbers (4000002500003155
// wants 3-D Secure, 4000000000000341 is declined at the charge) and returns its id:
// localstripe knows only a few of Stripe's pm_card_… aliases, every test number.
func (ls *Localstripe) Card(t testing.TB, number string) string {
	t.Helper()
	var pm struct{ ID string }
	ls.API(t, http.MethodPost, "/v1/payment_methods", url.Values{"type": {"card"}, "card[number]": {number},
		"card[exp_month]": {"12"}, "card[exp_year]": {"2030"}, "card[cvc]": {"123"}}, &pm)
	return pm.ID
}

// Intents is the status of each PaymentIntent localstripe holds for order (its
// metadata[order_id]), oldest first.
func (ls *Localstripe) Intents(t testing.TB, order string) []string {
	t.Helper()
	var list struct {
		Data []struct {
			Status   string
			Metadata map[string]string
		}
	}
	ls.API(t, http.MethodGet, "/v1/payment_intents?limit=1000", nil, &list)
	var got []string
	for _, pi := range list.Data {
		if pi.Metadata["order_id"] == order {
			got = append(got, pi.Status)
		}
	}
	return got
}
