package config_test

import (
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/common-events/config"
	"github.com/orderflow/common-events/services"
)

func getenv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// withAuth adds the settings every service requires to m.
func withAuth(m map[string]string) map[string]string {
	out := map[string]string{"AUTH_ISSUER": "http://issuer.test", "AUTH_JWKS_URL": "http://issuer.test/jwks.json"}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestReadBaseDefaults(t *testing.T) {
	env := config.NewEnv(getenv(withAuth(nil)))
	got := config.ReadBase(env, services.Order)
	if err := env.Err(); err != nil {
		t.Fatal(err)
	}
	if got.HTTPAddr != services.Order.Addr() || got.DatabaseURL != services.Order.DefaultDatabaseURL() || got.TopicPartitions != 6 ||
		len(got.KafkaBrokers) != 1 || got.KafkaBrokers[0] != "127.0.0.1:9092" || got.LogLevel != slog.LevelInfo ||
		got.ShutdownTimeout != 15*time.Second || got.Auth.Audience != "orderflow" ||
		got.MaxInFlight != 0 || got.MaxWaiting != 1000 || got.ReadTimeout != 10*time.Second || got.GCPercent != 300 || got.MemoryLimit != 64<<20 {
		t.Errorf("defaults = %+v", got)
	}
	// Where the services' defaults differ, each has its own.
	if r := config.ReadBase(config.NewEnv(getenv(withAuth(nil))), services.Reconciliation); r.DatabaseURL != services.Reconciliation.DefaultDatabaseURL() ||
		r.ConsumerLinger != services.Reconciliation.Linger || r.HTTPAddr != services.Reconciliation.Addr() {
		t.Errorf("reconciliation-service's defaults = %+v", r)
	}
}

func TestReadBaseFromEnv(t *testing.T) {
	env := config.NewEnv(getenv(withAuth(map[string]string{
		"AUTH_AUDIENCE": "shop", "HTTP_ADDR": "127.0.0.1:9000", "DATABASE_URL": "postgresql://u:p@db:5432/x", "KAFKA_BROKERS": "k1:9092, k2:9093",
		"KAFKA_TOPIC_PARTITIONS": "12", "LOG_LEVEL": "debug", "SHUTDOWN_TIMEOUT": "30s", "CONSUMER_CONCURRENCY": "16",
		"GOGC": "100", "GOMEMLIMIT": "1GiB",
	})))
	got := config.ReadBase(env, services.Order)
	if err := env.Err(); err != nil {
		t.Fatal(err)
	}
	if got.HTTPAddr != "127.0.0.1:9000" || got.TopicPartitions != 12 || strings.Join(got.KafkaBrokers, ",") != "k1:9092,k2:9093" ||
		got.LogLevel != slog.LevelDebug || got.ShutdownTimeout != 30*time.Second || got.ConsumerConcurrency != 16 ||
		got.GCPercent != 100 || got.MemoryLimit != 1<<30 || got.Auth.Issuer != "http://issuer.test" || got.Auth.JWKSURL != "http://issuer.test/jwks.json" || got.Auth.Audience != "shop" {
		t.Errorf("read = %+v", got)
	}
}

func TestBadSettingsAreNamedOnOneLine(t *testing.T) {
	tests := []struct {
		name, value, want string
	}{
		{"HTTP_ADDR", "8080", "HTTP_ADDR: want [host]:port"},
		{"DATABASE_URL", "mysql://x", "DATABASE_URL: want a postgres:// URL"},
		{"KAFKA_BROKERS", "kafka", "KAFKA_BROKERS: want host:port"},
		{"KAFKA_TOPIC_PARTITIONS", "six", `KAFKA_TOPIC_PARTITIONS: want an integer from 1 to 1000, got "six"`},
		{"KAFKA_TOPIC_PARTITIONS", "0", "KAFKA_TOPIC_PARTITIONS: want an integer from 1 to 1000"},
		{"LOG_LEVEL", "loud", "LOG_LEVEL: want debug, info, warn or error"},
		{"SHUTDOWN_TIMEOUT", "10", "SHUTDOWN_TIMEOUT: want a duration"},
		{"CONSUMER_CONCURRENCY", "0", "CONSUMER_CONCURRENCY: want an integer from 1 to 10000"},
		{"GOGC", "off", `GOGC: want an integer from 25 to 10000, got "off"`},
		{"GOMEMLIMIT", "64MB", `GOMEMLIMIT: want a size of at least 16MiB such as "512MiB", or off, got "64MB"`},
		{"GOMEMLIMIT", "8MiB", `GOMEMLIMIT: want a size of at least 16MiB`},
		{"AUTH_ISSUER", "", "AUTH_ISSUER: required but not set"},
		{"AUTH_JWKS_URL", "", "AUTH_JWKS_URL: required but not set"},
		{"AUTH_JWKS_URL", "issuer.test/jwks.json", `AUTH_JWKS_URL: want an http:// or https:// URL, got "issuer.test/jwks.json"`},
		{"AUTH_JWKS_URL", "ftp://issuer.test/jwks.json", "AUTH_JWKS_URL: want an http:// or https:// URL"},
		{"HTTP_MAX_IN_FLIGHT", "-1", "HTTP_MAX_IN_FLIGHT: want an integer from 0 to 100000"},
		{"HTTP_MAX_WAITING", "0", "HTTP_MAX_WAITING: want an integer from 1 to 100000"},
		{"HTTP_READ_TIMEOUT", "10", "HTTP_READ_TIMEOUT: want a duration"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "OTEL_EXPORTER_OTLP_ENDPOINT: want an http:// or https:// URL"},
		{"OTEL_TRACES_EXPORTER", "zipkin", `OTEL_TRACES_EXPORTER: want otlp or none, got "zipkin"`},
		{"OTEL_SDK_DISABLED", "yes", "OTEL_SDK_DISABLED: want true or false"},
		{"OTEL_TRACES_SAMPLER", "sometimes", "OTEL_TRACES_SAMPLER: want always_on"},
		{"OTEL_TRACES_SAMPLER_ARG", "2", "OTEL_TRACES_SAMPLER_ARG: want a number from 0 to 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			env := config.NewEnv(getenv(withAuth(map[string]string{tt.name: tt.value})))
			config.ReadBase(env, services.Order)
			err := env.Err()
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line containing %q", err, tt.want)
			}
		})
	}
	env := config.NewEnv(getenv(map[string]string{"KAFKA_TOPIC_PARTITIONS": "x", "LOG_LEVEL": "y"}))
	config.ReadBase(env, services.Order)
	if err := env.Err(); err == nil || !strings.Contains(err.Error(), "KAFKA_TOPIC_PARTITIONS") || !strings.Contains(err.Error(), "LOG_LEVEL") {
		t.Errorf("two bad settings: err = %v, want both named", err)
	}
}

// A linger must leave a record's attempt most of its handler timeout; with the default
// timeout any linger the range allows does.
func TestALingerMustFitWellWithinTheHandlerTimeout(t *testing.T) {
	for _, tc := range []struct {
		linger, timeout string
		ok              bool
	}{
		{"1s", "", true}, {"250ms", "1s", true}, {"251ms", "1s", false}, {"1s", "2s", false},
	} {
		env := config.NewEnv(getenv(withAuth(map[string]string{"CONSUMER_LINGER": tc.linger, "CONSUMER_HANDLER_TIMEOUT": tc.timeout})))
		config.ReadBase(env, services.Order)
		err := env.Err()
		if tc.ok != (err == nil) || (err != nil && !strings.Contains(err.Error(), "CONSUMER_LINGER: want at most a quarter of CONSUMER_HANDLER_TIMEOUT")) {
			t.Errorf("CONSUMER_LINGER=%s CONSUMER_HANDLER_TIMEOUT=%s: err = %v, want ok %v", tc.linger, tc.timeout, err, tc.ok)
		}
	}
}

// GOMEMLIMIT reads as Go reads it: a number of bytes with one of Go's suffixes, or off.
func TestSizesReadAsGoReadsGOMEMLIMIT(t *testing.T) {
	for v, want := range map[string]int64{
		"": 64 << 20, "off": math.MaxInt64, "16777216": 16 << 20, "16777216B": 16 << 20, "20480KiB": 20 << 20,
		"512MiB": 512 << 20, "2GiB": 2 << 30, "1TiB": 1 << 40,
	} {
		env := config.NewEnv(getenv(map[string]string{"GOMEMLIMIT": v}))
		if got := env.Bytes("GOMEMLIMIT", 64<<20, 16<<20); got != want || env.Err() != nil {
			t.Errorf("GOMEMLIMIT=%q: %d (%v), want %d", v, got, env.Err(), want)
		}
	}
	for _, v := range []string{"64MB", "64 MiB", "MiB", "-1GiB", "1.5GiB", "9999999TiB", "16777215"} {
		env := config.NewEnv(getenv(map[string]string{"GOMEMLIMIT": v}))
		if env.Bytes("GOMEMLIMIT", 64<<20, 16<<20); env.Err() == nil {
			t.Errorf("GOMEMLIMIT=%q taken", v)
		}
	}
}

func TestRequiredAndRanges(t *testing.T) {
	env := config.NewEnv(getenv(map[string]string{"RATE": "1.5", "WAIT": "2h"}))
	env.Required("TOKEN")
	env.Float("RATE", 0, 0, 0.99)
	env.Duration("WAIT", 0, 0, time.Minute)
	err := env.Err()
	for _, want := range []string{"TOKEN: required but not set", "RATE: want a number from 0 to 0.99", "WAIT: want a duration"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to contain %q", err, want)
		}
	}
}

func TestReadAuthNamesWhatIsMissing(t *testing.T) {
	env := config.NewEnv(getenv(map[string]string{"AUTH_AUDIENCE": "shop"}))
	config.ReadAuth(env)
	err := env.Err()
	if err == nil || !strings.Contains(err.Error(), "AUTH_ISSUER") || !strings.Contains(err.Error(), "AUTH_JWKS_URL") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v, want one line naming AUTH_ISSUER and AUTH_JWKS_URL", err)
	}
	env = config.NewEnv(getenv(map[string]string{"AUTH_ISSUER": "https://id.example", "AUTH_JWKS_URL": "https://id.example/jwks"}))
	if cfg := config.ReadAuth(env); env.Err() != nil || cfg.Audience != "orderflow" || cfg.Issuer != "https://id.example" {
		t.Fatalf("read %+v, %v", cfg, env.Err())
	}
}

// The Kafka security settings read as librdkafka's: a password from a file, a CA from a
// PEM file; and every inconsistency is named on one line.
func TestReadKafka(t *testing.T) {
	dir := t.TempDir()
	secret, ca, notPEM := filepath.Join(dir, "password"), filepath.Join(dir, "ca.pem"), filepath.Join(dir, "junk")
	// ca is only named, never read: each case that names it fails before.
	for path, body := range map[string]string{secret: "s3cret\n", ca: "", notPEM: "not a certificate"} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := config.NewEnv(getenv(map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
		"KAFKA_SASL_USERNAME": "payment-service", "KAFKA_SASL_PASSWORD_FILE": secret}))
	s := config.ReadKafka(env)
	if err := env.Err(); err != nil || s.Protocol != "SASL_PLAINTEXT" || s.Mechanism != "SCRAM-SHA-512" || s.Username != "payment-service" || s.Password != "s3cret" {
		t.Errorf("read %+v (%v)", s, err)
	}
	if s := config.ReadKafka(config.NewEnv(getenv(nil))); s.Protocol != "PLAINTEXT" || s.TLSEnabled() || s.SASLEnabled() {
		t.Errorf("unset: %+v, want PLAINTEXT", s)
	}
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL"}, `KAFKA_SECURITY_PROTOCOL: want one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, got "SASL"`},
		{map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, "KAFKA_SASL_MECHANISM: required with KAFKA_SECURITY_PROTOCOL=SASL_SSL"},
		{map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, "KAFKA_SASL_MECHANISM: want one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"},
		{map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_PASSWORD: required (or KAFKA_SASL_PASSWORD_FILE"},
		{map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p", "KAFKA_SASL_PASSWORD_FILE": secret}, "KAFKA_SASL_PASSWORD: set both it and KAFKA_SASL_PASSWORD_FILE"},
		{map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_PASSWORD": "p"}, "KAFKA_SASL_USERNAME: required but not set"},
		{map[string]string{"KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_USERNAME: set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use it"},
		{map[string]string{"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p", "KAFKA_SSL_CA_LOCATION": ca}, "KAFKA_SSL_CA_LOCATION: set, but KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT does not use it"},
		{map[string]string{"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": notPEM}, "holds no PEM certificate"},
		{map[string]string{"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": filepath.Join(dir, "missing.pem")}, "no such file"},
		{map[string]string{"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTIFICATE_LOCATION": ca}, "a client certificate needs both its certificate and its key"},
	} {
		env := config.NewEnv(getenv(tc.env))
		config.ReadKafka(env)
		if err := env.Err(); err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: err = %v, want one line containing %q", tc.env, err, tc.want)
		}
	}
}
