package config

import (
	"os"
	"slices"
	"strings"

	"github.com/orderflow/common-events/kafka"
)

// ReadKafka reads how the services reach the cluster, in the names librdkafka and the Java
// client use (security.protocol → KAFKA_SECURITY_PROTOCOL, and so on):
//
//   - KAFKA_SECURITY_PROTOCOL: PLAINTEXT (the default), SSL, SASL_PLAINTEXT or SASL_SSL;
//   - with SASL: KAFKA_SASL_MECHANISM (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512),
//     KAFKA_SASL_USERNAME, and KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE (one of them);
//   - with TLS: KAFKA_SSL_CA_LOCATION (PEM; unset: the system's CAs), and
//     KAFKA_SSL_CERTIFICATE_LOCATION with KAFKA_SSL_KEY_LOCATION for a client certificate.
//
// A setting the protocol does not use is an error, not ignored: it says the protocol is
// not the one meant.
func ReadKafka(e *Env) kafka.Security {
	s := kafka.Security{Protocol: e.OneOf("KAFKA_SECURITY_PROTOCOL", kafka.Plaintext, kafka.Plaintext, kafka.SSL, kafka.SASLPlaintext, kafka.SASLSSL)}
	sasl := []string{"KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SASL_PASSWORD_FILE"}
	ssl := []string{"KAFKA_SSL_CA_LOCATION", "KAFKA_SSL_CERTIFICATE_LOCATION", "KAFKA_SSL_KEY_LOCATION"}
	if s.SASLEnabled() {
		s.Mechanism = e.OneOf("KAFKA_SASL_MECHANISM", "", kafka.MechanismPlain, kafka.MechanismSCRAMSHA256, kafka.MechanismSCRAMSHA512)
		if s.Mechanism == "" {
			e.fail("KAFKA_SASL_MECHANISM", "required with KAFKA_SECURITY_PROTOCOL=%s", s.Protocol)
		}
		s.Username = e.Required("KAFKA_SASL_USERNAME")
		s.Password = e.Secret("KAFKA_SASL_PASSWORD")
	} else {
		e.unused(s.Protocol, sasl...)
	}
	if s.TLSEnabled() {
		ca, cert, key := e.String(ssl[0], ""), e.String(ssl[1], ""), e.String(ssl[2], "")
		tls, err := kafka.TLSConfig(ca, cert, key)
		if err != nil {
			e.fail(strings.Join(ssl, ", "), "%v", err)
		}
		s.TLS = tls
	} else {
		e.unused(s.Protocol, ssl...)
	}
	return s
}

// OneOf returns the variable, which must be one of allowed, or def when unset.
func (e *Env) OneOf(name, def string, allowed ...string) string {
	e.note(name, def, "one of "+strings.Join(allowed, ", "))
	v := e.lookup(name)
	if v == "" {
		return def
	}
	if !slices.Contains(allowed, v) {
		e.fail(name, "want one of %s, got %q", strings.Join(allowed, ", "), v)
	}
	return v
}

// Secret returns the variable name, or what the file NAME_FILE holds (its last line end
// trimmed): exactly one of the two must be set.
func (e *Env) Secret(name string) string {
	e.note(name, "required", "or "+name+"_FILE")
	e.note(name+"_FILE", "", "a file that holds "+name)
	v, file := e.lookup(name), e.lookup(name+"_FILE")
	switch {
	case v != "" && file != "":
		e.fail(name, "set both it and %s_FILE; set one", name)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			e.fail(name+"_FILE", "%v", err)
		}
		v = strings.TrimRight(string(b), "\r\n")
	case v == "":
		e.fail(name, "required (or %s_FILE, a file that holds it)", name)
	}
	return v
}

// unused records an error for each of names that is set although protocol does not use it.
func (e *Env) unused(protocol string, names ...string) {
	for _, n := range names {
		if e.lookup(n) != "" {
			e.fail(n, "set, but KAFKA_SECURITY_PROTOCOL=%s does not use it", protocol)
		}
	}
}
