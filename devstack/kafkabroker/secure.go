package kafkabroker

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/devstack/pki"
)

// Admin is the super user of a Secure broker: it creates the topics and grants the
// services their ACLs (each service's kafka-setup), runs the operators' tools, and is
// what the broker logs in as to its own controller.
const Admin = "admin"

// Mechanism is how a Secure broker's principals log in.
const Mechanism = kafka.MechanismSCRAMSHA512

// Secure is what a broker closed to strangers needs: a certificate for its TLS, and
// its principals with their passwords.
type Secure struct {
	// CA is the PEM file of the authority that signed the broker's certificate: what
	// its clients trust (KAFKA_SSL_CA_LOCATION).
	CA string
	// KeyStore is the broker's key and certificate, PEM, for 127.0.0.1 and localhost.
	KeyStore string
	// Users are the SCRAM-SHA-512 principals, Admin among them, by name: the file that
	// holds each one's password (KAFKA_SASL_PASSWORD_FILE).
	Users map[string]string
}

// NewSecure makes, in dir, or finds there from an earlier call, a CA and the broker's
// certificate, and a random password for Admin and each of users. What is there already is
// kept (a devstack's data outlives its runs), a certificate close to expiry renewed.
func NewSecure(dir string, users ...string) (*Secure, error) {
	ca, err := pki.Open(filepath.Join(dir, "pki"), "orderflow devstack CA", 365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	s := &Secure{CA: ca.File, KeyStore: filepath.Join(dir, "pki", "broker-keystore.pem"), Users: map[string]string{}}
	if !validFor(s.KeyStore, ca, 24*time.Hour) {
		if _, err := ca.Issue("broker", x509.ExtKeyUsageServerAuth); err != nil {
			return nil, err
		}
	}
	for _, u := range append([]string{Admin}, users...) {
		file := filepath.Join(dir, "users", u+".password")
		if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
				return nil, err
			}
			b := make([]byte, 16)
			_, _ = rand.Read(b)
			if err := os.WriteFile(file, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
				return nil, err
			}
		} else if err != nil {
			return nil, err
		}
		s.Users[u] = file
	}
	return s, nil
}

// validFor reports whether the keystore at path holds a certificate ca signed that is
// good for another d.
func validFor(path string, ca *pki.Authority, d time.Duration) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	cert, err := pki.Certificate(b)
	if err != nil || time.Until(cert.NotAfter) < d {
		return false
	}
	_, err = cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err == nil
}

// Password is user's password.
func (s *Secure) Password(user string) (string, error) {
	file, ok := s.Users[user]
	if !ok {
		return "", fmt.Errorf("kafka: no principal %q on this broker", user)
	}
	b, err := os.ReadFile(file)
	return strings.TrimSpace(string(b)), err
}

// Client is how user reaches the broker: SASL_SSL, SCRAM-SHA-512, trusting CA.
func (s *Secure) Client(user string) kafka.Security {
	pw, _ := s.Password(user)
	tls, _ := kafka.TLSConfig(s.CA, "", "")
	return kafka.Security{Protocol: kafka.SASLSSL, Mechanism: Mechanism, Username: user, Password: pw, TLS: tls}
}

// Env is Client as a service reads it: the KAFKA_* settings that log in as user.
func (s *Secure) Env(user string) map[string]string {
	return map[string]string{
		"KAFKA_SECURITY_PROTOCOL":  kafka.SASLSSL,
		"KAFKA_SASL_MECHANISM":     Mechanism,
		"KAFKA_SASL_USERNAME":      user,
		"KAFKA_SASL_PASSWORD_FILE": s.Users[user],
		"KAFKA_SSL_CA_LOCATION":    s.CA,
	}
}

// WriteEnv writes to path, as lines NAME=value, Env(user) and KAFKA_BROKERS=brokers:
// what a tool of ours run by hand reads (make dlq KAFKA_ENV=path).
func (s *Secure) WriteEnv(user, brokers, path string) error {
	env := s.Env(user)
	env["KAFKA_BROKERS"] = brokers
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(env)) {
		fmt.Fprintf(&b, "%s=%s\n", k, env[k])
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// scramArgs are the storage tool's arguments that make the principals at format time.
func (s *Secure) scramArgs() []string {
	var args []string
	for _, u := range slices.Sorted(maps.Keys(s.Users)) {
		pw, _ := s.Password(u)
		args = append(args, "--add-scram", fmt.Sprintf("%s=[name=%s,password=%s]", Mechanism, u, pw))
	}
	return args
}

// formatted names the file in a data folder that lists the principals it was formatted
// with.
const formatted = "orderflow-users.json"

// reformatIfOtherUsers empties data, the broker's storage, when it was formatted with
// other principals than s's (or with none, before the broker was secure): principals are
// made at format time only. A nil s changes nothing.
func (s *Secure) reformatIfOtherUsers(data string) error {
	if s == nil {
		return nil
	}
	want, _ := json.Marshal(slices.Sorted(maps.Keys(s.Users)))
	if _, err := os.Stat(filepath.Join(data, "meta.properties")); err == nil {
		if got, _ := os.ReadFile(filepath.Join(data, formatted)); string(got) != string(want) {
			if err := os.RemoveAll(data); err != nil {
				return err
			}
		}
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(data, formatted), want, 0o600)
}

// configure makes props a secure broker's: the client listener (CLIENT, and the others
// Options.Listeners adds) SASL_SSL with SCRAM, the controller's SASL_PLAINTEXT with PLAIN
// (a controller cannot read SCRAM credentials before it has read its log) on the
// loopback; the StandardAuthorizer, allowing nothing an ACL does not allow, Admin a super
// user.
func (s *Secure) configure(props map[string]string) {
	pw, _ := s.Password(Admin)
	for _, k := range []string{"listeners", "advertised.listeners"} {
		props[k] = strings.Replace(props[k], "PLAINTEXT://", "CLIENT://", 1)
	}
	props["listener.security.protocol.map"] = "CLIENT:SASL_SSL,CONTROLLER:SASL_PLAINTEXT"
	props["inter.broker.listener.name"] = "CLIENT"
	props["sasl.enabled.mechanisms"] = Mechanism
	props["sasl.mechanism.inter.broker.protocol"] = Mechanism
	props["sasl.mechanism.controller.protocol"] = kafka.MechanismPlain
	props["listener.name.controller.sasl.enabled.mechanisms"] = kafka.MechanismPlain
	props["listener.name.controller.plain.sasl.jaas.config"] =
		fmt.Sprintf(`org.apache.kafka.common.security.plain.PlainLoginModule required username="%s" password="%s" user_%s="%s";`, Admin, pw, Admin, pw)
	s.configureListener(props, "CLIENT")
	props["ssl.keystore.type"] = "PEM"
	props["ssl.keystore.location"] = s.KeyStore
	props["ssl.truststore.type"] = "PEM"
	props["ssl.truststore.location"] = s.CA
	props["authorizer.class.name"] = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
	props["allow.everyone.if.no.acl.found"] = "false"
	props["super.users"] = "User:" + Admin
}

// ClientProperties writes to path the Java client's settings that log in as user (what
// Kafka's tools read with --command-config) and returns path.
func (s *Secure) ClientProperties(user, path string) (string, error) {
	pw, err := s.Password(user)
	if err != nil {
		return "", err
	}
	props := fmt.Sprintf("security.protocol=SASL_SSL\nsasl.mechanism=%s\n"+
		"sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"%s\" password=\"%s\";\n"+
		"ssl.truststore.type=PEM\nssl.truststore.location=%s\n", Mechanism, user, pw, s.CA)
	return path, os.WriteFile(path, []byte(props), 0o600)
}

// configureListener makes client listener name take SCRAM logins. Its login module's
// username and password are what the broker logs in with when it is the client (the
// inter-broker listener, CLIENT); the server side checks logins against the
// credentials made at format time.
func (s *Secure) configureListener(props map[string]string, name string) {
	pw, _ := s.Password(Admin)
	props["listener.name."+strings.ToLower(name)+"."+strings.ToLower(Mechanism)+".sasl.jaas.config"] =
		fmt.Sprintf(`org.apache.kafka.common.security.scram.ScramLoginModule required username="%s" password="%s";`, Admin, pw)
}
