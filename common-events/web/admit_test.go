package web_test

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/orderflow/common-events/web"
)

// Beyond the limits a request is refused at once, 503 overloaded with Retry-After, while
// those admitted go on; the waiting ones have places of their own, the exempt paths are
// never refused, and a place is free again when its request ends.
func TestAdmitRefusesBeyondTheLimits(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	e := web.NewEcho(slog.New(slog.DiscardHandler), nil)
	e.Use(web.Admit(web.Limits{Working: 2, Waiting: 1, Exempt: []string{"/healthz"}}))
	hold := func(c echo.Context) error {
		started <- struct{}{}
		<-release
		return c.NoContent(http.StatusNoContent)
	}
	e.GET("/work", hold)
	e.GET("/healthz", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	srv := httptest.NewServer(e)
	defer srv.Close()
	get := func(path string, headers ...string) (int, http.Header, []byte) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, nil, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}
	done := make(chan int, 3)
	for _, h := range [][]string{nil, nil, {"Accept", "text/event-stream"}} { // two working, one waiting
		go func() { s, _, _ := get("/work", h...); done <- s }()
		<-started
	}
	for _, h := range [][]string{nil, {"Accept", "text/event-stream"}, {"Prefer", "wait=5"}} {
		status, hdr, body := get("/work", h...)
		var p struct{ Code string }
		_ = json.Unmarshal(body, &p)
		if status != http.StatusServiceUnavailable || p.Code != web.CodeOverloaded || hdr.Get("Retry-After") != "1" {
			t.Errorf("request %v beyond the limits = %d %s (Retry-After %q), want 503 overloaded with Retry-After 1", h, status, body, hdr.Get("Retry-After"))
		}
	}
	if status, _, _ := get("/healthz"); status != http.StatusOK {
		t.Errorf("exempt path while full = %d, want 200", status)
	}
	close(release)
	for range 3 {
		if s := <-done; s != http.StatusNoContent {
			t.Errorf("an admitted request = %d, want 204", s)
		}
	}
	go func() { <-started }()
	if status, _, _ := get("/work"); status != http.StatusNoContent {
		t.Errorf("once the places are free again = %d, want 204", status)
	}
}

// A body that stops arriving is the client's problem, 408, not a dependency's 503.
func TestABodyThatStopsArrivingIs408(t *testing.T) {
	e := web.NewEcho(slog.New(slog.DiscardHandler), nil)
	e.Use(web.Admit(web.Limits{Working: 1, Waiting: 1}))
	e.POST("/read", func(c echo.Context) error {
		_, err := io.ReadAll(c.Request().Body)
		return err
	})
	srv := httptest.NewUnstartedServer(e)
	srv.Config.ReadTimeout = 300 * time.Millisecond
	srv.Start()
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "POST /read HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":")
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	var p struct{ Code string }
	_ = json.Unmarshal(body, &p)
	if resp.StatusCode != http.StatusRequestTimeout || p.Code != "request_timeout" {
		t.Errorf("a stalled body = %d %s, want 408 request_timeout", resp.StatusCode, body)
	}
}
