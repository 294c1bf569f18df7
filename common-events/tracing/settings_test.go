package tracing_test

import (
	"strings"
	"testing"

	"github.com/orderflow/common-events/config"
	"github.com/orderflow/common-events/tracing"
)

// Spans are exported only when the standard variables say where; OTLP over gRPC is named
// as unsupported rather than ignored.
func TestReadConfig(t *testing.T) {
	tests := []struct {
		env                map[string]string
		endpoint, service  string
		headers, errSubstr string
	}{
		{env: nil},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318/"}, endpoint: "http://jaeger:4318/v1/traces"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://b/traces"}, endpoint: "https://b/traces"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, endpoint: "http://localhost:4318/v1/traces"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_TRACES_EXPORTER": "none"}},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_SDK_DISABLED": "true"}},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_SERVICE_NAME": "orders-eu", "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%3Dcret, x=1"},
			endpoint: "http://a:4318/v1/traces", service: "orders-eu", headers: "api-key=s=cret x=1"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, errSubstr: `OTEL_EXPORTER_OTLP_PROTOCOL: only http/protobuf is spoken`},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, errSubstr: "OTEL_EXPORTER_OTLP_HEADERS: want key=value"},
	}
	for _, tt := range tests {
		env := config.NewEnv(func(k string) string { return tt.env[k] })
		got := tracing.ReadConfig(env)
		if err := env.Err(); tt.errSubstr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.errSubstr) {
				t.Errorf("%v: err = %v, want %q", tt.env, err, tt.errSubstr)
			}
			continue
		} else if err != nil {
			t.Errorf("%v: %v", tt.env, err)
		}
		var headers []string
		for _, k := range []string{"api-key", "x"} {
			if v, ok := got.Headers[k]; ok {
				headers = append(headers, k+"="+v)
			}
		}
		if got.Endpoint != tt.endpoint || got.ServiceName != tt.service || strings.Join(headers, " ") != tt.headers {
			t.Errorf("%v: read endpoint %q, service %q, headers %v; want %q, %q, %q", tt.env, got.Endpoint, got.ServiceName, got.Headers, tt.endpoint, tt.service, tt.headers)
		}
	}
}
