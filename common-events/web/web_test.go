package web_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/labstack/echo/v4"

	"github.com/orderflow/common-events/views"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/common-events/web/webtest"
)

const orderID = "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f"

var errSecret = errors.New("dial tcp 10.0.0.7:5432: password authentication failed for user admin")

type thing struct{ OrderID string }

// server serves NewEcho with a ListByOrder view over things, routes that fail in each way
// a handler can, and Health; asked records the order ids the list was asked for, and
// logs what NewEcho logged.
func server(t *testing.T, ready func(context.Context) error) (url string, asked *[]string, logs *bytes.Buffer) {
	t.Helper()
	logs = new(bytes.Buffer)
	errMapped := errors.New("mapped")
	e := web.NewEcho(slog.New(slog.NewJSONHandler(logs, nil)), func(err error) *web.Problem {
		if errors.Is(err, errMapped) {
			return web.NewProblem(http.StatusConflict, "conflict", "Conflict", "it was mapped")
		}
		return nil
	})
	web.Health(e, ready)
	asked = new([]string)
	e.GET("/things", views.ListByOrder(func(_ context.Context, id string) ([]thing, error) {
		*asked = append(*asked, id)
		if id == "00000000-0000-0000-0000-000000000000" {
			return nil, errSecret
		}
		return nil, nil
	}, func(th thing) thing { return th }))
	e.GET("/problem", func(echo.Context) error {
		return web.NewProblem(http.StatusTeapot, "teapot", "I'm a teapot", "short and stout")
	})
	e.GET("/mapped", func(echo.Context) error { return errMapped })
	e.GET("/unmapped", func(echo.Context) error { return errSecret })
	e.GET("/echo-400", func(echo.Context) error { return echo.NewHTTPError(http.StatusBadRequest, "bad thing") })
	e.GET("/echo-413", func(echo.Context) error { return echo.ErrStatusRequestEntityTooLarge })
	e.GET("/echo-503", func(echo.Context) error { return echo.ErrServiceUnavailable })
	e.GET("/committed", func(c echo.Context) error {
		if err := c.String(http.StatusOK, "partial"); err != nil {
			return err
		}
		return errSecret
	})
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return srv.URL, asked, logs
}

func do(t *testing.T, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestErrorsAreProblems(t *testing.T) {
	url, _, logs := server(t, nil)
	tests := []struct {
		name, method, path string
		status             int
		code               string
		detail             string // a part of it
	}{
		{"a problem as it is", "GET", "/problem", 418, "teapot", "short and stout"},
		{"a mapped error", "GET", "/mapped", 409, "conflict", "it was mapped"},
		{"an unknown error, without its internals", "GET", "/unmapped", 500, "internal", "safe to retry"},
		{"echo's 4xx", "GET", "/echo-400", 400, "bad_request", "bad thing"},
		{"echo's 413", "GET", "/echo-413", 413, "body_too_large", "too large"},
		{"echo's 5xx, without its message", "GET", "/echo-503", 500, "internal", "safe to retry"},
		{"unknown route", "GET", "/nope", 404, "not_found", "no such resource"},
		{"wrong method", "POST", "/things", 405, "method_not_allowed", "it allows OPTIONS, GET"},
		{"wrong method on a probe", "DELETE", "/healthz", 405, "method_not_allowed", "it allows OPTIONS, GET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs.Reset()
			resp, body := do(t, tt.method, url+tt.path)
			p := webtest.Problem(t, resp, body, tt.status, tt.code)
			if !strings.Contains(p.Detail, tt.detail) {
				t.Errorf("detail = %q, want it to contain %q", p.Detail, tt.detail)
			}
			if strings.Contains(string(body), "password") {
				t.Errorf("body %s shows the error's internals", body)
			}
			if logged := strings.Contains(logs.String(), "request failed"); logged != (tt.status >= 500) {
				t.Errorf("logged %q; want the failure logged exactly when it is a 5xx", logs.String())
			}
			if tt.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != "OPTIONS, GET" {
				t.Errorf("Allow = %q, want %q", resp.Header.Get("Allow"), "OPTIONS, GET")
			}
		})
	}
}

// HEAD is not served where only GET is: a 405 with the problem's headers and no body.
func TestHeadOnGetRoute(t *testing.T) {
	url, asked, _ := server(t, nil)
	resp, body := do(t, http.MethodHead, url+"/things?order_id="+orderID)
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Content-Type") != web.ProblemContentType ||
		resp.Header.Get("Allow") != "OPTIONS, GET" || len(body) != 0 {
		t.Errorf("HEAD = %d, %s, Allow %q, body %q; want 405 problem+json, Allow \"OPTIONS, GET\", no body",
			resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Allow"), body)
	}
	if len(*asked) != 0 {
		t.Errorf("HEAD listed things for %v", *asked)
	}
}

// An error after the answer began cannot change it: no problem is appended to it.
func TestErrorAfterCommit(t *testing.T) {
	url, _, _ := server(t, nil)
	resp, body := do(t, http.MethodGet, url+"/committed")
	if resp.StatusCode != http.StatusOK || string(body) != "partial" {
		t.Errorf("answer = %d %q, want only the 200 %q already begun", resp.StatusCode, body, "partial")
	}
}

func TestOrderIDParam(t *testing.T) {
	url, asked, _ := server(t, nil)
	tests := []struct {
		name     string
		rawQuery string
		status   int
		code     string
		detail   string // a part of it
	}{
		{"missing", "", 422, "validation", "order_id is required"},
		{"only another param", "x=1", 422, "validation", "order_id is required"},
		{"empty", "order_id=", 422, "validation", "must not be empty"},
		{"no equals sign", "order_id", 422, "validation", "must not be empty"},
		{"not a uuid", "order_id=42", 422, "validation", "must be a UUID"},
		{"uuid with junk", "order_id=" + orderID + "%27--", 422, "validation", "must be a UUID"},
		{"non-UTF-8", "order_id=%FF%FE", 422, "validation", "must be a UUID"},
		{"36 bytes of non-ASCII", "order_id=" + strings.Repeat("%C3%A9", 18), 422, "validation", "must be a UUID"},
		{"10 KB", "order_id=" + strings.Repeat("a", 10<<10), 422, "validation", "must be a UUID"},
		{"repeated", "order_id=" + orderID + "&order_id=" + orderID, 422, "validation", "must be given once"},
		{"bad escape", "order_id=%ZZ", 400, "malformed_query", `invalid URL escape "%ZZ"`},
		{"bad escape elsewhere", "order_id=" + orderID + "&x=%", 400, "malformed_query", "invalid URL escape"},
		{"semicolon", "order_id=" + orderID + ";x", 400, "malformed_query", "semicolon"},
		{"a failing list", "order_id=00000000-0000-0000-0000-000000000000", 500, "internal", "safe to retry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			*asked = nil
			resp, body := do(t, http.MethodGet, url+"/things?"+tt.rawQuery)
			p := webtest.Problem(t, resp, body, tt.status, tt.code)
			if !strings.Contains(p.Detail, tt.detail) {
				t.Errorf("detail = %q, want it to contain %q", p.Detail, tt.detail)
			}
			if tt.code == "validation" {
				if len(p.Errors) != 1 || p.Errors[0].Field != "order_id" || p.Errors[0].Message == "" {
					t.Errorf("errors = %+v, want one naming order_id", p.Errors)
				}
				if strings.Contains(p.Detail, "aaaa") {
					t.Errorf("detail %q repeats the value", p.Detail)
				}
			}
			if tt.status < 500 && len(*asked) != 0 {
				t.Errorf("listed things for %v; want a bad request refused before", *asked)
			}
		})
	}

	t.Run("valid, in upper case, among unknown params", func(t *testing.T) {
		*asked = nil
		resp, body := do(t, http.MethodGet, url+"/things?x=1&order_id="+strings.ToUpper(orderID)+"&y=")
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != `{"items":[]}` {
			t.Errorf("answer = %d %s, want 200 {\"items\":[]}", resp.StatusCode, body)
		}
		if len(*asked) != 1 || (*asked)[0] != orderID {
			t.Errorf("listed things for %v, want [%s] in lower case", *asked, orderID)
		}
	})
}

func TestHealth(t *testing.T) {
	tests := []struct {
		name   string
		ready  error
		path   string
		status int
		body   string
	}{
		{"alive", nil, "/healthz", 200, `{"status":"ok"}`},
		{"alive while not ready", errors.New("database: down"), "/healthz", 200, `{"status":"ok"}`},
		{"ready", nil, "/readyz", 200, `{"status":"ready"}`},
		{"not ready", &web.NotReady{Dependency: "database", Err: errors.New("dial tcp 10.0.0.7:5432 user=postgres: refused")}, "/readyz", 503, `{"error":"the database does not answer","status":"unavailable"}`},
		{"not ready, unnamed", errors.New("secret detail"), "/readyz", 503, `{"error":"a dependency does not answer","status":"unavailable"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url, _, _ := server(t, func(context.Context) error { return tt.ready })
			resp, body := do(t, http.MethodGet, url+tt.path)
			if resp.StatusCode != tt.status || strings.TrimSpace(string(body)) != tt.body ||
				!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
				t.Errorf("GET %s = %d %s %s, want %d %s", tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), body, tt.status, tt.body)
			}
		})
	}
}

// An error that says a dependency cannot serve the request now is a 503 naming its kind,
// with Retry-After and without the error's words; any other error stays a 500.
func TestDependencyErrorsAre503s(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code string // "" : a 500
	}{
		{"cannot connect", &pgconn.ConnectError{}, web.CodeDatabaseUnavailable},
		{"admin shutdown", fmt.Errorf("get order: %w", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}), web.CodeDatabaseUnavailable},
		{"starting up", &pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}, web.CodeDatabaseUnavailable},
		{"connection failure", &pgconn.PgError{Code: "08006"}, web.CodeDatabaseUnavailable},
		{"too many connections", &pgconn.PgError{Code: "53300"}, web.CodeDatabaseUnavailable},
		{"connection lost mid-query", fmt.Errorf("list orders: %w", io.ErrUnexpectedEOF), web.CodeDatabaseUnavailable},
		{"connection reset", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, web.CodeDatabaseUnavailable},
		{"statement timed out", fmt.Errorf("query: %w", context.DeadlineExceeded), web.CodeDatabaseTimeout},
		{"broker", fmt.Errorf("publish: %w", sarama.ErrOutOfBrokers), web.CodeBrokerUnavailable},
		{"a missing table is a bug", &pgconn.PgError{Code: "42P01", Message: "relation does not exist"}, ""},
		{"a unique violation is a bug here", &pgconn.PgError{Code: "23505"}, ""},
		{"the client went away", fmt.Errorf("query: %w", context.Canceled), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := web.NewEcho(slog.New(slog.DiscardHandler), nil)
			e.GET("/x", func(echo.Context) error { return fmt.Errorf("%w (password=hunter2 host=db.internal)", tt.err) })
			srv := httptest.NewServer(e)
			defer srv.Close()
			resp, body := do(t, http.MethodGet, srv.URL+"/x")
			want, code := http.StatusServiceUnavailable, tt.code
			if code == "" {
				want, code = http.StatusInternalServerError, "internal"
			}
			webtest.Problem(t, resp, body, want, code)
			if ra := resp.Header.Get("Retry-After"); (want == 503) != (ra != "") {
				t.Errorf("Retry-After = %q on a %d", ra, want)
			}
			if strings.Contains(string(body), "hunter2") || strings.Contains(string(body), "db.internal") {
				t.Errorf("the answer shows the error's internals: %s", body)
			}
		})
	}
}
