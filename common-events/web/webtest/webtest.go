// Package webtest holds what tests of the services' HTTP side share: the check that an
// answer is a well-formed problem+json.
package webtest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/orderflow/common-events/web"
)

// Problem asserts that resp, whose body is body, is a problem+json of status and code —
// its type /problems/<code>, a title and a detail, no member beyond RFC 9457's and ours —
// and returns it.
func Problem(t testing.TB, resp *http.Response, body []byte, status int, code string) web.Problem {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d; body %.300s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != web.ProblemContentType {
		t.Errorf("Content-Type = %q, want %q", ct, web.ProblemContentType)
	}
	var p web.Problem
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("problem body %.300s: %v", body, err)
	}
	if p.Status != status || p.Code != code || p.Type != "/problems/"+code || p.Title == "" || p.Detail == "" {
		t.Errorf("problem = %+v, want status %d, code %s, type /problems/%s, a title and a detail", p, status, code, code)
	}
	return p
}
