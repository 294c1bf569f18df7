package compose_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orderflow/devstack/compose"
	"github.com/orderflow/devstack/pki"
)

// The first run makes every secret, the owner's alone; a later run keeps them and what
// else the file holds, and makes only what is missing; the broker's certificate is for
// kafka and localhost, signed by the CA the host trusts.
func TestEnsureMakesTheSecretsOnceAndKeepsThem(t *testing.T) {
	root := t.TempDir()
	env, added, err := compose.Ensure(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != len(compose.Secrets()) {
		t.Errorf("first run added %v, want every secret %v", added, compose.Secrets())
	}
	seen := map[string]bool{}
	for _, name := range compose.Secrets() {
		if v := env[name]; len(v) < 24 || seen[v] {
			t.Errorf("%s = %q: want a random value of its own", name, v)
		}
		seen[env[name]] = true
	}
	path := filepath.Join(root, compose.EnvFile)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf(".env: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}

	// Someone's own line, a secret removed, the file opened to others.
	b, _ := os.ReadFile(path)
	lines := strings.Split(string(b), "\n")
	var kept []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "GRAFANA_ADMIN_PASSWORD=") {
			kept = append(kept, l)
		}
	}
	if err := os.WriteFile(path, []byte(strings.Join(kept, "\n")+"ORDERFLOW_BIND=0.0.0.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	again, added, err := compose.Ensure(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != 1 || added[0] != "GRAFANA_ADMIN_PASSWORD" {
		t.Errorf("second run added %v, want only GRAFANA_ADMIN_PASSWORD", added)
	}
	for _, name := range compose.Secrets() {
		if name != "GRAFANA_ADMIN_PASSWORD" && again[name] != env[name] {
			t.Errorf("%s changed from %q to %q", name, env[name], again[name])
		}
	}
	if again["ORDERFLOW_BIND"] != "0.0.0.0" {
		t.Errorf("the file's own line is lost: %v", again)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf(".env is %v after the second run, want 0600", fi.Mode().Perm())
	}

	ca, err := os.ReadFile(filepath.Join(root, compose.PKIDir, compose.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := pki.Certificate(ca)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	ks, err := os.ReadFile(filepath.Join(root, compose.PKIDir, compose.KeyStoreFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ks), "PRIVATE KEY") {
		t.Error("the broker's keystore holds no key")
	}
	cert, err := pki.Certificate(ks)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"kafka", "localhost", "127.0.0.1"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("the broker's certificate for %s: %v", host, err)
		}
	}
	dlq, err := os.ReadFile(filepath.Join(root, compose.DLQEnv))
	if err != nil || !strings.Contains(string(dlq), "KAFKA_SASL_USERNAME=dlq\n") || !strings.Contains(string(dlq), "KAFKA_SASL_PASSWORD="+env["KAFKA_PASSWORD_DLQ"]+"\n") {
		t.Errorf("%s: %v\n%s", compose.DLQEnv, err, dlq)
	}
}
