// Package config reads a service's settings from its environment, once, and names every
// bad one on a single line.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/common-events/tracing"
)

// Env reads settings once from getenv and collects every problem, so start-up fails with
// one line naming each bad setting.
type Env struct {
	getenv func(string) string
	errs   []error
	names  []string
	noted  map[string]Setting
}

// Setting is a variable as the code reads it: its default and what it allows, for the
// configuration page (docs/configuration.md, which a test keeps in step with it).
type Setting struct {
	Name    string
	Default string // "" when unset means nothing; "required" when it must be set
	Allowed string // what a value must be, "" for any string
}

// Settings lists every variable read so far, once each, in the order first read, with
// its default and what it allows as its first typed read said.
func (e *Env) Settings() []Setting {
	var out []Setting
	seen := map[string]bool{}
	for _, n := range e.names {
		if !seen[n] {
			seen[n] = true
			s := e.noted[n]
			s.Name = n
			out = append(out, s)
		}
	}
	return out
}

// Names lists the names of settings.
func Names(settings []Setting) []string {
	out := make([]string, len(settings))
	for i, s := range settings {
		out[i] = s.Name
	}
	return out
}

// short is d as a person writes it: 10m, not 10m0s.
func short(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func (e *Env) note(name, def, allowed string) {
	if e.noted == nil {
		e.noted = map[string]Setting{}
	}
	if _, ok := e.noted[name]; !ok {
		e.noted[name] = Setting{Name: name, Default: def, Allowed: allowed}
	}
}

// NewEnv reads from getenv (os.Getenv in main, a map in tests).
func NewEnv(getenv func(string) string) *Env { return &Env{getenv: getenv} }

// Names lists every variable read so far, for documentation and checks.
func (e *Env) Names() []string { return e.names }

func (e *Env) lookup(name string) string {
	e.names = append(e.names, name)
	return strings.TrimSpace(e.getenv(name))
}

// Fail records that setting name is bad, saying why: for a reader of settings of its own
// (tracing.ReadConfig).
func (e *Env) Fail(name, format string, args ...any) { e.fail(name, format, args...) }

func (e *Env) fail(name, format string, args ...any) {
	e.errs = append(e.errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
}

// String returns the variable, or def when unset.
func (e *Env) String(name, def string) string {
	e.note(name, def, "")
	if v := e.lookup(name); v != "" {
		return v
	}
	return def
}

// Required returns the variable and records an error when it is unset.
func (e *Env) Required(name string) string {
	e.note(name, "required", "")
	v := e.lookup(name)
	if v == "" {
		e.fail(name, "required but not set")
	}
	return v
}

// Int returns the variable as an integer within [lo, hi], or def when unset.
func (e *Env) Int(name string, def, lo, hi int) int {
	e.note(name, strconv.Itoa(def), fmt.Sprintf("an integer, %d–%d", lo, hi))
	v := e.lookup(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		e.fail(name, "want an integer from %d to %d, got %q", lo, hi, v)
		return def
	}
	return n
}

// Float returns the variable as a number within [lo, hi], or def when unset.
func (e *Env) Float(name string, def, lo, hi float64) float64 {
	num := func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
	e.note(name, num(def), "a number, "+num(lo)+"–"+num(hi))
	v := e.lookup(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < lo || f > hi {
		e.fail(name, "want a number from %g to %g, got %q", lo, hi, v)
		return def
	}
	return f
}

// Duration returns the variable as a Go duration ("250ms", "5s") within [lo, hi].
func (e *Env) Duration(name string, def, lo, hi time.Duration) time.Duration {
	e.note(name, short(def), fmt.Sprintf("a duration, %s–%s", short(lo), short(hi)))
	v := e.lookup(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		e.fail(name, "want a duration from %s to %s such as \"250ms\", got %q", lo, hi, v)
		return def
	}
	return d
}

// Bytes returns the variable as an amount of memory in Go's GOMEMLIMIT form (a number of
// bytes with an optional B, KiB, MiB, GiB or TiB: "64MiB"), at least lo, or def when
// unset; "off" is no limit, math.MaxInt64.
func (e *Env) Bytes(name string, def, lo int64) int64 {
	e.note(name, sizeName(def), "a size of at least "+sizeName(lo)+" (B, KiB, MiB, GiB, TiB), or off")
	v := e.lookup(name)
	switch v {
	case "":
		return def
	case "off":
		return math.MaxInt64
	}
	digits := strings.TrimRight(v, "BKMGTi")
	unit, ok := sizeUnits[v[len(digits):]]
	n, err := strconv.ParseInt(digits, 10, 64)
	if !ok || err != nil || n > math.MaxInt64/unit || n*unit < lo {
		e.fail(name, "want a size of at least %s such as \"512MiB\", or off, got %q", sizeName(lo), v)
		return def
	}
	return n * unit
}

// sizeUnits are the suffixes Go's GOMEMLIMIT takes, "" being bytes.
var sizeUnits = map[string]int64{"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}

// sizeName writes n bytes in the largest of sizeUnits that divides it.
func sizeName(n int64) string {
	for _, u := range []string{"TiB", "GiB", "MiB", "KiB"} {
		if n%sizeUnits[u] == 0 && n >= sizeUnits[u] {
			return strconv.FormatInt(n/sizeUnits[u], 10) + u
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// HostPorts returns a comma-separated list of host:port, or def when unset.
func (e *Env) HostPorts(name string, def []string) []string {
	e.note(name, strings.Join(def, ","), "host:port[,host:port…]")
	v := e.lookup(name)
	if v == "" {
		return def
	}
	var out []string
	for _, hp := range strings.Split(v, ",") {
		hp = strings.TrimSpace(hp)
		if _, port, err := splitHostPort(hp); err != nil || port == "" {
			e.fail(name, "want host:port[,host:port…], got %q", v)
			return def
		}
		out = append(out, hp)
	}
	return out
}

// Addr returns a listen address such as ":8080" or "127.0.0.1:8080".
func (e *Env) Addr(name, def string) string {
	e.note(name, def, "[host]:port")
	v := e.lookup(name)
	if v == "" {
		return def
	}
	if _, port, err := splitHostPort(v); err != nil || port == "" {
		e.fail(name, "want [host]:port, got %q", v)
		return def
	}
	return v
}

// PostgresURL returns a postgres:// URL.
func (e *Env) PostgresURL(name, def string) string {
	e.note(name, redact(def), "a postgres:// URL (`?host=/run/postgresql`: through a Unix socket)")
	v := e.lookup(name)
	if v == "" {
		v = def
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		e.fail(name, "want a postgres:// URL, got %q", redact(v))
	}
	return v
}

// URL returns an http:// or https:// URL with a host, or def when unset.
func (e *Env) URL(name, def string) string {
	e.note(name, def, "an http:// or https:// URL")
	v := e.lookup(name)
	if v == "" {
		return def
	}
	e.checkURL(name, v)
	return v
}

func (e *Env) checkURL(name, v string) {
	if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		e.fail(name, "want an http:// or https:// URL, got %q", redact(v))
	}
}

// HTTPURL returns a required http:// or https:// URL with a host.
func (e *Env) HTTPURL(name string) string {
	e.note(name, "required", "an http:// or https:// URL")
	v := e.lookup(name)
	if v == "" {
		e.fail(name, "required but not set")
		return v
	}
	e.checkURL(name, v)
	return v
}

// Level returns a slog level name (debug, info, warn, error).
func (e *Env) Level(name string, def slog.Level) slog.Level {
	e.note(name, strings.ToLower(def.String()), "debug, info, warn or error")
	v := e.lookup(name)
	if v == "" {
		return def
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(v)); err != nil {
		e.fail(name, "want debug, info, warn or error, got %q", v)
		return def
	}
	return l
}

// Err is nil when every setting was good, else one line naming each bad one.
func (e *Env) Err() error {
	if len(e.errs) == 0 {
		return nil
	}
	msgs := make([]string, len(e.errs))
	for i, err := range e.errs {
		msgs[i] = err.Error()
	}
	return errors.New("config: " + strings.Join(msgs, "; "))
}

func splitHostPort(hp string) (host, port string, err error) {
	i := strings.LastIndexByte(hp, ':')
	if i < 0 {
		return "", "", fmt.Errorf("missing port")
	}
	port = hp[i+1:]
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", "", fmt.Errorf("bad port")
	}
	return hp[:i], port, nil
}

func redact(v string) string {
	if u, err := url.Parse(v); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return u.String()
		}
	}
	return v
}

// Base is the configuration every service shares.
type Base struct {
	HTTPAddr     string
	DatabaseURL  string
	KafkaBrokers []string
	// Kafka is how the service reaches the cluster: TLS, SASL (ReadKafka).
	Kafka           kafka.Security
	TopicPartitions int
	// TopicRetention is how long the event topics the service makes keep their records.
	TopicRetention  time.Duration
	LogLevel        slog.Level
	ShutdownTimeout time.Duration
	PprofAddr       string // where net/http/pprof listens; empty: nowhere
	// GCPercent is the Go collector's GOGC: how far the heap grows past what the last
	// collection kept before the next one starts, in percent. MemoryLimit is its
	// GOMEMLIMIT, in bytes: near it the collector runs as often as it must to stay under.
	GCPercent   int
	MemoryLimit int64
	// ConsumerConcurrency bounds the records in flight per partition in every consumer
	// group of the service (consumer.Runner.Concurrency; 0, unset: the runner's default).
	ConsumerConcurrency int
	// HandlerTimeout bounds one attempt at a consumed record, both its steps
	// (consumer.Runner.HandlerTimeout; 0, unset: the runner's default).
	HandlerTimeout time.Duration
	// ConsumerLinger is how long a consumed record ready to commit may wait for others
	// to share its transaction (consumer.Runner.Linger).
	ConsumerLinger time.Duration
	// MaxInFlight bounds the API's requests being worked on at once (0: two per
	// database connection of the pool); MaxWaiting those waiting (event streams,
	// Prefer: wait). ClientInFlight and ClientWaiting are one client's shares of them
	// (ClientInFlight 0: a quarter of MaxInFlight). MaxQueued requests (0: ten per
	// working place) may wait up to QueueWait for a working place.
	MaxInFlight, MaxWaiting       int
	ClientInFlight, ClientWaiting int
	MaxQueued                     int
	QueueWait                     time.Duration
	// RateLimit is each client's rate (requests a second; 0: none) on every route,
	// RateBurst how many it may send at once.
	RateLimit float64
	RateBurst int
	// ProbeRate is each client's rate of probes and scrapes (a second; 0: none), twice
	// that at once; beyond it they are held for their turn, up to a second.
	ProbeRate float64
	// ReadTimeout bounds the time to read a whole request, headers and body.
	ReadTimeout time.Duration
	// Auth names the issuer whose bearer tokens the service's API accepts.
	Auth auth.Config
	// Tracing says whether and where the service's spans are exported.
	Tracing tracing.Config
}

// TopicRetention reads KAFKA_TOPIC_RETENTION: how long the event topics keep their
// records when a service or its kafka-setup makes them, 30 days unless set: the horizon
// of a read model rebuilt by replaying them. (The entity topics are compacted and keep
// each key's latest record for ever.)
func TopicRetention(e *Env) time.Duration {
	return e.Duration("KAFKA_TOPIC_RETENTION", 30*24*time.Hour, time.Hour, 10*365*24*time.Hour)
}

// ReadBase reads the shared settings, with svc's defaults where the services' differ (its
// Addr, DefaultDatabaseURL and Linger).
func ReadBase(e *Env, svc services.Service) Base {
	b := Base{
		HTTPAddr:        e.Addr("HTTP_ADDR", svc.Addr()),
		DatabaseURL:     e.PostgresURL("DATABASE_URL", svc.DefaultDatabaseURL()),
		KafkaBrokers:    e.HostPorts("KAFKA_BROKERS", []string{"127.0.0.1:9092"}),
		Kafka:           ReadKafka(e),
		TopicPartitions: e.Int("KAFKA_TOPIC_PARTITIONS", 6, 1, 1000),
		TopicRetention:  TopicRetention(e),
		LogLevel:        e.Level("LOG_LEVEL", slog.LevelInfo),
		ShutdownTimeout: e.Duration("SHUTDOWN_TIMEOUT", 15*time.Second, time.Second, 5*time.Minute),
		PprofAddr:       e.Addr("PPROF_ADDR", ""),
		GCPercent:       e.Int("GOGC", 300, 25, 10000),
		MemoryLimit:     e.Bytes("GOMEMLIMIT", 64<<20, 16<<20),

		ConsumerConcurrency: e.Int("CONSUMER_CONCURRENCY", 0, 1, 10000),
		HandlerTimeout:      e.Duration("CONSUMER_HANDLER_TIMEOUT", 0, time.Second, 10*time.Minute),
		ConsumerLinger:      e.Duration("CONSUMER_LINGER", svc.Linger, 0, time.Second),
		MaxInFlight:         e.Int("HTTP_MAX_IN_FLIGHT", 0, 0, 100000),
		MaxWaiting:          e.Int("HTTP_MAX_WAITING", 1000, 1, 100000),
		ClientInFlight:      e.Int("HTTP_CLIENT_MAX_IN_FLIGHT", 0, 0, 100000),
		ClientWaiting:       e.Int("HTTP_CLIENT_MAX_WAITING", 100, 1, 100000),
		MaxQueued:           e.Int("HTTP_MAX_QUEUED", 0, 0, 100000),
		QueueWait:           e.Duration("HTTP_QUEUE_WAIT", time.Second, 0, time.Minute),
		RateLimit:           e.Float("HTTP_RATE_LIMIT", 100, 0, 1e6),
		RateBurst:           e.Int("HTTP_RATE_BURST", 200, 1, 1e6),
		ProbeRate:           e.Float("HTTP_PROBE_RATE", 20, 0, 1e6),
		ReadTimeout:         e.Duration("HTTP_READ_TIMEOUT", 10*time.Second, 100*time.Millisecond, 10*time.Minute),
		Auth:                ReadAuth(e),
		Tracing:             tracing.ReadConfig(e),
	}
	// A record's attempt lingers (its look-ups, its commit) within its handler timeout: a
	// linger near the timeout would fail every attempt of a record that comes alone.
	if t := b.HandlerTimeout; t > 0 && b.ConsumerLinger > t/4 {
		e.fail("CONSUMER_LINGER", "want at most a quarter of CONSUMER_HANDLER_TIMEOUT (%s), got %s", short(t/4), short(b.ConsumerLinger))
	}
	return b
}

// ReadAuth reads whose tokens the service accepts: AUTH_ISSUER and AUTH_JWKS_URL (an
// http or https URL) are required, AUTH_AUDIENCE defaults to "orderflow".
func ReadAuth(e *Env) auth.Config {
	return auth.Config{
		Issuer:   e.Required("AUTH_ISSUER"),
		Audience: e.String("AUTH_AUDIENCE", "orderflow"),
		JWKSURL:  e.HTTPURL("AUTH_JWKS_URL"),
	}
}
