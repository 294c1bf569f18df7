package web

import (
	"net/http"
	"slices"
	"strconv"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderflow/common-events/tracing"
)

// Traced makes a server span of every request but those to the paths in untraced (probes,
// scrapes): a child of the caller's traceparent when it sent one, else a new trace. The
// handlers' context carries the span, so what they do joins it (tracing.Start), and so do
// the events they cause (tracing.TraceParent).
func Traced(tracer trace.Tracer, untraced ...string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if slices.Contains(untraced, req.URL.Path) {
				return next(c)
			}
			route, method := Route(c), Method(req)
			ctx := tracing.Extract(req.Context(), propagation.HeaderCarrier(req.Header))
			ctx, span := tracer.Start(ctx, method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attribute.String("http.request.method", method), attribute.String("http.route", route),
					attribute.String("url.path", req.URL.Path)))
			defer span.End()
			c.SetRequest(req.WithContext(ctx))
			if err := next(c); err != nil {
				c.Error(err) // answer now, so the span has the status the client gets
			}
			status := c.Response().Status
			span.SetAttributes(attribute.Int("http.response.status_code", status))
			if status >= 500 {
				span.SetStatus(codes.Error, strconv.Itoa(status))
			}
			return nil
		}
	}
}

// Route is the pattern the request matched ("/orders/:id"), bounded unlike the URL path,
// or "unmatched".
func Route(c echo.Context) string {
	if route := c.Path(); route != "" && route != "/*" {
		return route
	}
	return "unmatched"
}

// Method is the request's method, or "OTHER" for one outside the standard ones: to
// net/http any token is a method, and a label or span name must stay bounded.
func Method(req *http.Request) string {
	if slices.Contains(methods, req.Method) {
		return req.Method
	}
	return "OTHER"
}

var methods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace}
