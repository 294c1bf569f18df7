// Package compose makes what docker-compose.yml needs and the repository must not hold:
// the stack's secrets, in .env, and the certificate of the broker's listener for the host.
package compose

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/devstack/kafkabroker"
	"github.com/orderflow/devstack/pki"
	"github.com/orderflow/devstack/stack"
)

// Where Ensure writes, from the repository's root: .env is where docker compose reads
// the variables the file refers to.
const (
	EnvFile = ".env"
	PKIDir  = ".data/compose/pki"
	// DLQEnv logs the operators' dead-letter tool in from the host: make dlq KAFKA_ENV=….
	DLQEnv = ".data/compose/dlq.env"
)

// Files of PKIDir that docker-compose.yml mounts: the CA, which the host's clients trust,
// and the broker's key and certificate (a PEM keystore), for kafka, localhost and
// 127.0.0.1.
const (
	CAFile       = "ca.pem"
	KeyStoreFile = "broker-keystore.pem"
)

// Secrets are the variables docker-compose.yml refuses to start without (${NAME:?…}):
// each a random value Ensure makes once and keeps.
func Secrets() []string {
	s := []string{
		"POSTGRES_PASSWORD",        // PostgreSQL's superuser, postgres
		"KEYCLOAK_ADMIN_PASSWORD",  // Keycloak's admin console, admin
		"KEYCLOAK_OPERATOR_SECRET", // the realm's orderflow-operator client
		"KEYCLOAK_ADA_PASSWORD",    // the realm's demo customers
		"KEYCLOAK_GRACE_PASSWORD",
		"GRAFANA_ADMIN_PASSWORD",  // Grafana's admin
		"KAFKA_UI_LOGIN_PASSWORD", // Kafka UI's login form, admin
	}
	for _, svc := range stack.Services {
		s = append(s, DatabasePassword(svc))
	}
	for _, p := range KafkaPrincipals() {
		s = append(s, KafkaPassword(p))
	}
	return s
}

// KafkaPrincipals are the broker's SCRAM logins: its administrator (which kafka-setup runs
// as and the broker itself logs in as), each service, the operators' dead-letter tool
// and Kafka UI's read-only viewer.
func KafkaPrincipals() []string {
	return slices.Concat([]string{kafkabroker.Admin}, stack.Services, []string{kafka.OperatorPrincipal, kafka.ViewerPrincipal})
}

// KafkaPassword is the variable that holds principal's password: KAFKA_PASSWORD_ and
// the name in capitals, "-" as "_" (deploy/kafka/start.sh reads them back so).
func KafkaPassword(principal string) string {
	return "KAFKA_PASSWORD_" + strings.ToUpper(strings.ReplaceAll(principal, "-", "_"))
}

// DatabasePassword is the variable that holds service's database role's password.
func DatabasePassword(service string) string {
	return strings.ToUpper(strings.ReplaceAll(service, "-", "_")) + "_DB_PASSWORD"
}

// Ensure makes root/.env hold a value for every secret, keeping those it holds (and
// anything else in it) and adding random ones for the rest; the file is the owner's
// alone (0600). It makes the broker's certificate in root/.data/compose/pki unless one
// good for another 30 days is there, and DLQEnv. It returns the variables of .env and the
// names it added.
func Ensure(root string) (env map[string]string, added []string, err error) {
	path := filepath.Join(root, EnvFile)
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, nil, err
	}
	if env, err = parse(old); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	var b bytes.Buffer
	b.Write(old)
	if len(old) == 0 {
		b.WriteString("# The compose stack's secrets, made at random by make up (devstack/compose) and kept.\n" +
			"# Never commit this file. Change a value only before the first docker compose up\n" +
			"# (docs/compose.md says how to change one afterwards).\n")
	} else if !bytes.HasSuffix(old, []byte("\n")) {
		b.WriteByte('\n')
	}
	for _, name := range Secrets() {
		if env[name] != "" {
			continue
		}
		env[name] = random()
		added = append(added, name)
		fmt.Fprintf(&b, "%s=%s\n", name, env[name])
	}
	if len(added) > 0 || len(old) == 0 {
		if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
			return nil, nil, err
		}
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, nil, err
	}
	if err := ensureCertificate(filepath.Join(root, PKIDir)); err != nil {
		return nil, nil, err
	}
	dlq := fmt.Sprintf("KAFKA_BROKERS=localhost:9092\nKAFKA_SECURITY_PROTOCOL=%s\nKAFKA_SASL_MECHANISM=%s\n"+
		"KAFKA_SASL_USERNAME=%s\nKAFKA_SASL_PASSWORD=%s\nKAFKA_SSL_CA_LOCATION=%s\n",
		kafka.SASLSSL, kafkabroker.Mechanism, kafka.OperatorPrincipal, env[KafkaPassword(kafka.OperatorPrincipal)],
		filepath.Join(root, PKIDir, CAFile))
	return env, added, os.WriteFile(filepath.Join(root, DLQEnv), []byte(dlq), 0o600)
}

// ensureCertificate makes, in dir, a CA and the broker's certificate for kafka (its name
// on the compose network), localhost and 127.0.0.1, unless good ones are there. The
// broker's container runs as a user of its own, so the two files it mounts are readable
// by all (0644); dir itself is the owner's alone.
func ensureCertificate(dir string) error {
	ca, err := pki.Open(dir, "orderflow compose CA", 2*365*24*time.Hour)
	if err != nil {
		return err
	}
	keystore := filepath.Join(dir, KeyStoreFile)
	if b, err := os.ReadFile(keystore); err == nil {
		if cert, err := pki.Certificate(b); err == nil && time.Until(cert.NotAfter) > 30*24*time.Hour {
			if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "kafka", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
				return nil
			}
		}
	}
	issued, err := ca.Issue("broker", x509.ExtKeyUsageServerAuth, "kafka")
	if err != nil {
		return err
	}
	if issued.Bundle != keystore {
		return fmt.Errorf("compose: the broker's keystore is %s, want %s", issued.Bundle, keystore)
	}
	for _, f := range []string{ca.File, keystore} {
		if err := os.Chmod(f, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// parse reads lines NAME=value, skipping blank lines and comments.
func parse(b []byte) (map[string]string, error) {
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: want NAME=value, got %q", n, line)
		}
		env[strings.TrimSpace(name)] = strings.TrimSpace(value)
	}
	return env, sc.Err()
}

// random is 24 hexadecimal digits: safe unquoted in a URL, a shell, a JAAS line, YAML.
func random() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
