// Package web is the HTTP side every service shares: echo set up to answer every error
// as problem+json (RFC 9457), health and readiness probes, the contract documents, and
// bearer-token authentication.
package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
)

// ProblemContentType is RFC 9457's media type.
const ProblemContentType = "application/problem+json"

// FieldError names one invalid field of a request.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Problem is an RFC 9457 problem detail, and an error a handler can return.
type Problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail,omitempty"`
	Code   string       `json:"code,omitempty"`
	Errors []FieldError `json:"errors,omitempty"`
	// ErrorsOmitted counts the field errors not listed in Errors, which is bounded.
	ErrorsOmitted int `json:"errors_omitted,omitempty"`
	// RetryAfter, when above 0, is sent as the Retry-After header, in seconds.
	RetryAfter int `json:"-"`
}

func (p *Problem) Error() string { return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail) }

// NewProblem builds a problem whose type is derived from its code.
func NewProblem(status int, code, title, detail string) *Problem {
	return &Problem{Type: "/problems/" + code, Title: title, Status: status, Detail: detail, Code: code}
}

// ErrorMapper turns a service's domain error into a problem, or returns nil when the
// error is not one it knows (it then becomes a 500).
type ErrorMapper func(error) *Problem

// NewEcho returns an echo instance whose every error is answered as problem+json:
// problems as they are, echo's own errors (404 route, 405, 413…) translated, anything
// else logged and answered 500 without internals.
func NewEcho(log *slog.Logger, mapErr ErrorMapper) *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		p := toProblem(err, mapErr, c.Response().Header().Get(echo.HeaderAllow))
		if p.Status >= 500 {
			log.ErrorContext(c.Request().Context(), "request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
		}
		writeProblem(c, p)
	}
	return e
}

// toProblem translates err; allow is the Allow header echo set for a 405, if any.
func toProblem(err error, mapErr ErrorMapper, allow string) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	if mapErr != nil {
		if p := mapErr(err); p != nil {
			return p
		}
	}
	if be := (*BodyError)(nil); errors.As(err, &be) {
		return be.problem()
	}
	if p := dependencyProblem(err); p != nil {
		return p
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		case http.StatusNotFound:
			return NewProblem(he.Code, "not_found", "Not Found", "no such resource")
		case http.StatusMethodNotAllowed:
			detail := "the resource does not support this method"
			if allow != "" {
				detail += "; it allows " + allow
			}
			return NewProblem(he.Code, "method_not_allowed", "Method Not Allowed", detail)
		case http.StatusRequestEntityTooLarge:
			return NewProblem(he.Code, "body_too_large", "Request Entity Too Large", "the request body is too large")
		case http.StatusUnsupportedMediaType:
			return NewProblem(he.Code, "unsupported_media_type", "Unsupported Media Type", fmt.Sprint(he.Message))
		}
		if he.Code < 500 {
			return NewProblem(he.Code, "bad_request", http.StatusText(he.Code), fmt.Sprint(he.Message))
		}
	}
	return NewProblem(http.StatusInternalServerError, "internal", "Internal Server Error", "the request could not be completed; it is safe to retry")
}

func writeProblem(c echo.Context, p *Problem) {
	body, _ := json.Marshal(p)
	c.Response().Header().Set(echo.HeaderContentType, ProblemContentType)
	if p.RetryAfter > 0 {
		c.Response().Header().Set("Retry-After", strconv.Itoa(p.RetryAfter))
	}
	c.Response().WriteHeader(p.Status)
	_, _ = c.Response().Write(body)
}

// YAMLMediaType is RFC 9512's media type for YAML.
const YAMLMediaType = "application/yaml"

// Document registers GET and HEAD path, answered with doc: an API description the service
// was built with (/openapi.yaml, /asyncapi.yaml).
func Document(e *echo.Echo, path string, doc []byte) {
	length := strconv.Itoa(len(doc))
	e.Match([]string{http.MethodGet, http.MethodHead}, path, func(c echo.Context) error {
		h := c.Response().Header()
		h.Set(echo.HeaderContentLength, length) // HEAD too, which writes no body
		if c.Request().Method == http.MethodHead {
			h.Set(echo.HeaderContentType, YAMLMediaType)
			return c.NoContent(http.StatusOK)
		}
		return c.Blob(http.StatusOK, YAMLMediaType, doc)
	})
}

// The probes' paths.
const (
	HealthPath = "/healthz"
	ReadyPath  = "/readyz"
)

// Health registers GET /healthz (the process answers) and GET /readyz (ready reports
// whether the database and the broker answer). ready should answer from what a check in
// the background last found, as platform.Stack.Ready does, so that a flood of probes
// costs the dependencies nothing; the 3 s bound is for one that asks them itself.
func Health(e *echo.Echo, ready func(context.Context) error) {
	e.GET(HealthPath, func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	e.GET(ReadyPath, func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), 3*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			// Which dependency, not how it failed: the error can name hosts, ports and users.
			what := "a dependency"
			var nr *NotReady
			if errors.As(err, &nr) {
				what = "the " + nr.Dependency
			}
			return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": what + " does not answer"})
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	})
}

// NotReady says which dependency a readiness check found unreachable.
type NotReady struct {
	Dependency string // "database", "broker"
	Err        error
}

func (e *NotReady) Error() string { return e.Dependency + ": " + e.Err.Error() }
func (e *NotReady) Unwrap() error { return e.Err }

// Query parses the request's query string strictly: broken URL encoding is a 400
// malformed_query problem, where echo would silently drop the broken pair.
func Query(c echo.Context) (url.Values, error) {
	q, err := url.ParseQuery(c.Request().URL.RawQuery)
	if err != nil {
		return nil, NewProblem(http.StatusBadRequest, "malformed_query", "Malformed query string",
			"the query string is not valid URL encoding: "+err.Error())
	}
	return q, nil
}
