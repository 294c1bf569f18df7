package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/config"
	"github.com/orderflow/devstack/testenv"
)

// docker-compose.yml's keycloak, run as far as a process can run it as Docker would: the
// server of the image's version (scripts/ensure-keycloak.sh), the service's command and
// environment as the compose loader reads them, its realm file in the import folder, its
// health check — on free ports of 127.0.0.1 instead of 8080 and 9000. The tokens it issues
// over HTTP must pass the services' own verifier, configured with the services' compose
// settings, and say who the demo users are and what they may do.
func TestKeycloakIssuesTheTokensTheServicesAccept(t *testing.T) {
	if os.Getenv("TEST_KEYCLOAK") != "1" {
		t.Skip("boots Keycloak (a JVM, 20 s and more): TEST_KEYCLOAK=1 runs it, as make test-keycloak does")
	}
	root := testenv.Root(t)
	p, err := loadCompose(t, root, "docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	svc := p.Services["keycloak"]
	r, err := loadRealm(realmFile(svc))
	if err != nil {
		t.Fatalf("the keycloak service's realm file: %v", err)
	}
	kc := startKeycloak(t, root, svc, r.Realm)

	// The health check, as Docker runs it, passes on this Keycloak's management port and
	// fails where nothing answers.
	check := svc.HealthCheck.Test
	if len(check) < 2 || check[0] != "CMD" || !strings.Contains(strings.Join(check, " "), "127.0.0.1/9000") {
		t.Fatalf("keycloak's health check is %q, no longer a command asking 127.0.0.1:9000: update this test", check)
	}
	healthCheck := func(port int) ([]byte, error) {
		args := slices.Clone(check[1:])
		for i := range args {
			args[i] = strings.ReplaceAll(args[i], "127.0.0.1/9000", "127.0.0.1/"+strconv.Itoa(port))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return osexec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	}
	if out, err := healthCheck(kc.management); err != nil {
		t.Errorf("the compose health check fails on a ready Keycloak: %v\n%s", err, out)
	}
	if _, err := healthCheck(testenv.FreePort(t)); err == nil {
		t.Error("the compose health check passes where nothing answers")
	}

	// The services' settings, with compose's addresses of Keycloak replaced by this one's.
	order := p.Services["order-service"]
	cfg := config.ReadAuth(config.NewEnv(func(k string) string {
		if v := order.Environment[k]; v != nil {
			return *v
		}
		return ""
	}))
	cfg.Issuer, cfg.JWKSURL = kc.local(cfg.Issuer), kc.local(cfg.JWKSURL)
	v := auth.NewVerifier(cfg, nil)

	// A client on the compose network that reads the discovery document is sent to
	// addresses it can reach, and told the issuer the host's tokens carry.
	var discovery struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := getJSON(kc.network+"/realms/"+r.Realm+"/.well-known/openid-configuration", &discovery); err != nil {
		t.Fatal(err)
	}
	if discovery.Issuer != cfg.Issuer || discovery.JWKSURI != cfg.JWKSURL {
		t.Errorf("discovery over the network's address names issuer %q and keys %q, want %q and %q",
			discovery.Issuer, discovery.JWKSURI, cfg.Issuer, cfg.JWKSURL)
	}

	ada, grace := demoCustomers[0], demoCustomers[1]
	password := func(user string) url.Values {
		return url.Values{"grant_type": {"password"}, "client_id": {customerClient}, "username": {user}, "password": {filled(r.password(user), svc)}}
	}
	operator := url.Values{"grant_type": {"client_credentials"}, "client_id": {operatorClient}}
	if c := r.client(operatorClient); c != nil {
		operator.Set("client_secret", filled(c.Secret, svc))
	}
	fetch := func(base string, form url.Values) func() (string, error) {
		return func() (string, error) { return token(base, r.Realm, form) }
	}
	script := func(role string) func() (string, error) {
		return func() (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := osexec.CommandContext(ctx, filepath.Join(root, "scripts", "compose-token.sh"), role)
			cmd.Env = append(os.Environ(), "KEYCLOAK_URL="+kc.frontend)
			for _, k := range []string{"KEYCLOAK_ADA_PASSWORD", "KEYCLOAK_GRACE_PASSWORD", "KEYCLOAK_OPERATOR_SECRET"} {
				cmd.Env = append(cmd.Env, k+"="+getenv(svc)(k)) // what make up wrote to .env
			}
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			return strings.TrimSpace(string(out)), err
		}
	}
	tests := []struct {
		name       string
		token      func() (string, error)
		sub        string // "": any; the operator's is its service account's id, made at import
		grants     string
		notGranted string
	}{
		{"ada, password grant at the host's address", fetch(kc.frontend, password(ada.username)), ada.id, auth.ScopeCustomer, auth.ScopeOperator},
		{"grace, password grant at the network's address", fetch(kc.network, password(grace.username)), grace.id, auth.ScopeCustomer, auth.ScopeOperator},
		{"operator, client credentials", fetch(kc.frontend, operator), "", auth.ScopeOperator, auth.ScopeCustomer},
		{"compose-token.sh customer", script("customer"), ada.id, auth.ScopeCustomer, auth.ScopeOperator},
		{"compose-token.sh customer2", script("customer2"), grace.id, auth.ScopeCustomer, auth.ScopeOperator},
		{"compose-token.sh operator", script("operator"), "", auth.ScopeOperator, auth.ScopeCustomer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := tt.token()
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(context.Background(), tok)
			if err != nil {
				t.Fatalf("the services' verifier refuses the token: %v", err)
			}
			if got.Subject == "" || (tt.sub != "" && got.Subject != tt.sub) {
				t.Errorf("subject %q, want %s", got.Subject, tt.sub)
			}
			if !got.Has(tt.grants) || got.Has(tt.notGranted) {
				t.Errorf("scopes %q, want %s and not %s", got.Scopes, tt.grants, tt.notGranted)
			}
		})
	}

	refused := []struct {
		name string
		form url.Values
		want int
	}{
		{"a customer asking for the operators' scope", with(password(ada.username), "scope", auth.ScopeOperator), http.StatusBadRequest},
		{"a wrong password", with(password(ada.username), "password", "not-"+filled(r.password(ada.username), svc)), http.StatusUnauthorized},
		{"the operators' client with a wrong secret", with(operator, "client_secret", "not-the-secret"), http.StatusUnauthorized},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := token(kc.frontend, r.Realm, tt.form)
			var refusal *tokenRefused
			if !errors.As(err, &refusal) || refusal.status != tt.want {
				t.Errorf("got token %.20q… and %v, want a refusal with status %d", tok, err, tt.want)
			}
		})
	}

	// Last, as it locks grace out: brute-force protection. After failureFactor wrong
	// passwords in a row even the right one is refused for a while; before them it works.
	t.Run("passwords guessed in a row lock the user out", func(t *testing.T) {
		wrong := with(password(grace.username), "password", "guess")
		for range 5 {
			if _, err := token(kc.frontend, r.Realm, wrong); err == nil {
				t.Fatal("a wrong password got a token")
			}
		}
		if tok, err := token(kc.frontend, r.Realm, password(grace.username)); err == nil {
			t.Errorf("after 5 wrong passwords the right one still got a token (%.20q…): no brute-force protection", tok)
		}
	})
}

// with returns a copy of form with key set to value.
func with(form url.Values, key, value string) url.Values {
	out := url.Values{}
	for k, v := range form {
		out[k] = v
	}
	out.Set(key, value)
	return out
}

// keycloak is a Keycloak started from docker-compose.yml's keycloak service.
type keycloak struct {
	frontend   string // its KC_HOSTNAME, http://localhost:<port>: where compose's is reached from the host
	network    string // http://127.0.0.1:<port>: where compose's is reached on its network, http://keycloak:8080
	management int    // the management port, compose's 9000
	compose    *strings.Replacer
}

// local maps a URL of compose's Keycloak, at the host's or the network's address, to this one.
func (kc *keycloak) local(u string) string { return kc.compose.Replace(u) }

// tokenRefused is the token endpoint's answer when it grants nothing.
type tokenRefused struct {
	status int
	body   string
}

func (e *tokenRefused) Error() string { return fmt.Sprintf("token refused: %d %s", e.status, e.body) }

// token asks the token endpoint of realm at base for an access token.
func token(base, realm string, form url.Values) (string, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.PostForm(base+"/realms/"+realm+"/protocol/openid-connect/token", form)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", &tokenRefused{status: resp.StatusCode, body: string(body)}
	}
	var answer struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &answer); err != nil || answer.AccessToken == "" {
		return "", fmt.Errorf("no access_token in %s", body)
	}
	return answer.AccessToken, nil
}

// startKeycloak runs svc's command with svc's environment, but on free ports of 127.0.0.1
// and with its data (H2 database, imported realm) in a folder of the test's own; it waits
// until realmName is served, and stops Keycloak and waits for it when the test ends.
func startKeycloak(t *testing.T, root string, svc types.ServiceConfig, realmName string) *keycloak {
	t.Helper()
	server := ensureKeycloak(t, root)
	realm := realmFile(svc)
	if realm == "" {
		t.Fatalf("the keycloak service mounts no realm file into %s", realmImportDir)
	}
	composeHostname, err := url.Parse(ptrOr(svc.Environment["KC_HOSTNAME"], ""))
	if err != nil || composeHostname.Host == "" {
		t.Fatalf("the keycloak service's KC_HOSTNAME is not a URL: %v", err)
	}
	httpPort := ptrOr(svc.Environment["KC_HTTP_PORT"], "8080")

	// The folder Keycloak takes as its home (kc.home.dir): the server's lib, shared; its
	// own data/ and the realm file to import.
	home := t.TempDir()
	for _, dir := range []string{filepath.Join("data", "import"), "providers"} {
		if err := os.MkdirAll(filepath.Join(home, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(realm)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "data", "import", filepath.Base(realm)), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(server, "lib"), filepath.Join(home, "lib")); err != nil {
		t.Fatal(err)
	}

	port, management := testenv.FreePort(t), testenv.FreePort(t)
	hostname := *composeHostname
	hostname.Host = net.JoinHostPort(composeHostname.Hostname(), strconv.Itoa(port))
	kc := &keycloak{
		frontend:   strings.TrimSuffix(hostname.String(), "/"),
		network:    "http://127.0.0.1:" + strconv.Itoa(port),
		management: management,
		compose: strings.NewReplacer(composeHostname.Host, hostname.Host,
			"keycloak:"+httpPort, "127.0.0.1:"+strconv.Itoa(port)),
	}
	// Only the service's settings: none of this machine's KC_ variables.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KC_") {
			env = append(env, kv)
		}
	}
	for k, v := range svc.Environment {
		env = append(env, k+"="+ptrOr(v, ""))
	}
	env = append(env, "KC_HOSTNAME="+kc.frontend, "KC_HTTP_HOST=127.0.0.1",
		"KC_HTTP_PORT="+strconv.Itoa(port), "KC_HTTP_MANAGEMENT_PORT="+strconv.Itoa(management))

	logPath := filepath.Join(home, "keycloak.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logFile.Close() })
	// kc.sh passes -D arguments on to the JVM after its own, so this kc.home.dir wins.
	cmd := osexec.Command(filepath.Join(server, "bin", "kc.sh"), append([]string{"-Dkc.home.dir=" + home}, svc.Command...)...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, logFile, logFile
	// kc.sh runs the JVM as its child: both in a process group of their own, ended together.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}

	// The first start of a freshly fetched server rewrites its lib/quarkus for dev mode:
	// one test run at a time, under scripts/ensure-keycloak.sh's lock.
	unlock := lockServer(t, server)
	defer unlock()
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("keycloak: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})

	ready := kc.network + "/realms/" + realmName + "/.well-known/openid-configuration"
	serves := func() bool {
		client := &http.Client{Timeout: 5 * time.Second}
		resp, err := client.Get(ready)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	deadline := time.Now().Add(4 * time.Minute)
	for {
		select {
		case err := <-done:
			done <- err // for the cleanup
			t.Fatalf("keycloak exited at start (%v):\n%s", err, tail(logPath, 40))
		case <-time.After(250 * time.Millisecond):
		}
		if serves() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("keycloak does not serve %s after 4 minutes:\n%s", ready, tail(logPath, 40))
		}
	}
	rebuilt := ""
	if b, err := os.ReadFile(logPath); err == nil && strings.Contains(string(b), "Quarkus augmentation completed") {
		rebuilt = ", the server first rebuilt for dev mode"
	}
	t.Logf("%s: realm served %s after the start%s", filepath.Base(server), time.Since(started).Round(100*time.Millisecond), rebuilt)
	return kc
}

// ensureKeycloak runs scripts/ensure-keycloak.sh, which fetches the server the first time
// (Maven) and whenever tools/keycloak/pom.xml changes, and returns the server's folder.
func ensureKeycloak(t *testing.T, root string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := osexec.CommandContext(ctx, filepath.Join(root, "scripts", "ensure-keycloak.sh"))
	var stderr strings.Builder
	cmd.Stderr = io.MultiWriter(&stderr, os.Stderr) // "fetching…" shows while Maven works
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("keycloak: %s: %v", strings.TrimSpace(stderr.String()), err)
	}
	return strings.TrimSpace(string(out))
}

// lockServer takes the lock scripts/ensure-keycloak.sh takes for server's version, and
// returns its release.
func lockServer(t *testing.T, server string) (unlock func()) {
	t.Helper()
	f, err := os.OpenFile(filepath.Dir(server)+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatal(err)
	}
	return func() { f.Close() }
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
