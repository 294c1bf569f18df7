package tracing

import (
	"cmp"
	"net/url"
	"strings"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Settings reads a service's settings and collects the bad ones: config.Env is one.
type Settings interface {
	String(name, def string) string
	Float(name string, def, lo, hi float64) float64
	Fail(name, format string, args ...any)
}

// ReadTracing reads the standard OpenTelemetry variables that decide whether and where
// spans are exported: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as it is) or
// OTEL_EXPORTER_OTLP_ENDPOINT (plus /v1/traces), OTEL_EXPORTER_OTLP_(TRACES_)HEADERS,
// OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL (http/protobuf is the one spoken),
// OTEL_TRACES_EXPORTER (otlp or none), OTEL_SDK_DISABLED, OTEL_SERVICE_NAME and
// OTEL_TRACES_SAMPLER(_ARG). Nothing set: spans are not exported.
func ReadConfig(e Settings) Config {
	var cfg Config
	disabled := e.String("OTEL_SDK_DISABLED", "false")
	exporter := e.String("OTEL_TRACES_EXPORTER", "")
	cfg.ServiceName = e.String("OTEL_SERVICE_NAME", "")
	endpoint := e.String("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	if base := e.String("OTEL_EXPORTER_OTLP_ENDPOINT", ""); endpoint == "" && base != "" {
		endpoint = strings.TrimRight(base, "/") + "/v1/traces"
	}
	protocol := cmp.Or(e.String("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", ""), e.String("OTEL_EXPORTER_OTLP_PROTOCOL", ""))
	headers := cmp.Or(e.String("OTEL_EXPORTER_OTLP_TRACES_HEADERS", ""), e.String("OTEL_EXPORTER_OTLP_HEADERS", ""))
	cfg.Sampler = sampler(e)

	switch exporter {
	case "", "otlp":
	case "none":
		return Config{}
	default:
		e.Fail("OTEL_TRACES_EXPORTER", "want otlp or none, got %q", exporter)
	}
	switch strings.ToLower(disabled) {
	case "false":
	case "true":
		return Config{}
	default:
		e.Fail("OTEL_SDK_DISABLED", "want true or false, got %q", disabled)
	}
	if endpoint == "" && exporter == "otlp" {
		endpoint = "http://localhost:4318/v1/traces" // the specification's default
	}
	if endpoint == "" {
		return Config{}
	}
	if u, err := url.Parse(endpoint); err != nil {
		e.Fail("OTEL_EXPORTER_OTLP_ENDPOINT", "want an http:// or https:// URL, got %q", endpoint)
	} else if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		e.Fail("OTEL_EXPORTER_OTLP_ENDPOINT", "want an http:// or https:// URL, got %q", u.Redacted())
	}
	if protocol != "" && protocol != "http/protobuf" {
		e.Fail("OTEL_EXPORTER_OTLP_PROTOCOL", "only http/protobuf is spoken (OTLP over HTTP, port 4318), got %q", protocol)
	}
	cfg.Endpoint = endpoint
	if headers != "" {
		cfg.Headers = map[string]string{}
		for _, kv := range strings.Split(headers, ",") {
			k, v, ok := strings.Cut(kv, "=")
			k, kerr := url.QueryUnescape(strings.TrimSpace(k))
			v, verr := url.QueryUnescape(strings.TrimSpace(v))
			if !ok || k == "" || kerr != nil || verr != nil {
				e.Fail("OTEL_EXPORTER_OTLP_HEADERS", "want key=value[,key=value…] (values URL-encoded)")
				break
			}
			cfg.Headers[k] = v
		}
	}
	return cfg
}

// sampler reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG; nil: the default.
func sampler(e Settings) sdktrace.Sampler {
	name := e.String("OTEL_TRACES_SAMPLER", "")
	ratio := e.Float("OTEL_TRACES_SAMPLER_ARG", 1, 0, 1)
	switch name {
	case "":
		return nil
	case "always_on":
		return sdktrace.AlwaysSample()
	case "always_off":
		return sdktrace.NeverSample()
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio)
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample())
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample())
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))
	}
	e.Fail("OTEL_TRACES_SAMPLER", "want always_on, always_off, traceidratio or their parentbased_ forms, got %q", name)
	return nil
}
