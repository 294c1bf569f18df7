// Package viewstest is the acceptance suite that every service's operators' views
// ("GET /things?order_id=", built on views.OrderIDParam and web.NewEcho) must
// pass: bad input of every kind is a 4xx problem+json, never a 500, and harmless extras
// are ignored. Each service runs it against its own API on a real database.
package viewstest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/web"
	"github.com/orderflow/common-events/web/webtest"
)

const (
	orderID = "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f"
	// The subjects of the tokens the suite sends: an operator, and a customer (a UUID).
	operator = "operator"
	customer = "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"
)

// Issuer mints the tokens the suite sends, as the issuer the API trusts: devstack's
// issuer.Issuer is one.
type Issuer interface {
	// Mint returns a token for sub with scopes, valid from now for ttl.
	Mint(sub string, scopes []string, ttl time.Duration) (string, error)
	// Forgeries returns tokens for sub with scopes that must not get in (a bad signature,
	// expired, another audience, …), by what is wrong with each.
	Forgeries(sub string, scopes []string) (map[string]string, error)
}

// Views describes a service's operators' views for the suite.
type Views struct {
	URL        string   // the running API
	Routes     []string // every "GET /things?order_id=" route
	OtherParam string   // a parameter another kind of API might filter by, e.g. "status=SENT"
	Table      string   // a table the service keeps, for the SQL injection cases
	// Issuer is the issuer whose tokens the API accepts: the views need an operator's.
	Issuer Issuer

	authorization string // an operator's
}

// TestViews runs the suite. An order id that nothing was recorded for must answer an
// empty list.
func TestViews(t *testing.T, v Views) {
	tok, err := v.Issuer.Mint(operator, []string{auth.ScopeOperator}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	v.authorization = "Bearer " + tok
	t.Run("let only operators in", func(t *testing.T) { letOnlyOperatorsIn(t, v) })
	t.Run("rejects bad order ids", func(t *testing.T) { rejectsBadOrderID(t, v) })
	t.Run("accepts valid order ids", func(t *testing.T) { acceptsValidOrderID(t, v) })
	t.Run("wrong methods", func(t *testing.T) { wrongMethods(t, v) })
	t.Run("unknown routes", func(t *testing.T) { unknownRoutes(t, v) })
	t.Run("probes ignore the query", func(t *testing.T) { probesIgnoreQuery(t, v) })
	t.Run("serves the event contract", func(t *testing.T) { servesAsyncAPI(t, v) })
}

// Every service serves the AsyncAPI document it was built with, at GET and HEAD
// /asyncapi.yaml, and nothing else there.
func servesAsyncAPI(t *testing.T, v Views) {
	doc := events.AsyncAPI()
	resp, body := send(t, v.authorization, http.MethodGet, v.URL, "/asyncapi.yaml", "", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != web.YAMLMediaType || !bytes.Equal(body, doc) {
		t.Errorf("GET /asyncapi.yaml = %d %s, %d bytes; want 200 %s, the %d bytes of events.AsyncAPI()",
			resp.StatusCode, resp.Header.Get("Content-Type"), len(body), web.YAMLMediaType, len(doc))
	}
	resp, body = send(t, v.authorization, http.MethodHead, v.URL, "/asyncapi.yaml", "", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Length") != strconv.Itoa(len(doc)) || len(body) != 0 {
		t.Errorf("HEAD /asyncapi.yaml = %d, Content-Length %q, %d bytes; want 200, %d, no body",
			resp.StatusCode, resp.Header.Get("Content-Length"), len(body), len(doc))
	}
	resp, body = send(t, v.authorization, http.MethodPost, v.URL, "/asyncapi.yaml", "", "{}")
	checkProblem(t, http.MethodPost, resp, body, http.StatusMethodNotAllowed, "method_not_allowed", "")
}

// send makes a request whose path and query go on the wire exactly as given, so a test
// can send what a well-behaved client would have escaped; with authorization, when not
// empty, as its Authorization header.
func send(t *testing.T, authorization, method, base, path, rawQuery, body string) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base, r)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = path // written as is, unlike Path
	req.URL.RawQuery = rawQuery
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, got
}

// checkProblem asserts that the answer is a problem+json of status and code, naming field
// when one is given. A HEAD answer has the problem's headers and no body.
func checkProblem(t *testing.T, method string, resp *http.Response, body []byte, status int, code, field string) {
	t.Helper()
	if resp.StatusCode >= 500 {
		t.Fatalf("status = %d, want %d and never a 5xx; body %.300s", resp.StatusCode, status, body)
	}
	if method == http.MethodHead {
		if resp.StatusCode != status {
			t.Fatalf("status = %d, want %d; body %.300s", resp.StatusCode, status, body)
		}
		if ct := resp.Header.Get("Content-Type"); ct != web.ProblemContentType {
			t.Errorf("Content-Type = %q, want %q", ct, web.ProblemContentType)
		}
		if len(body) != 0 {
			t.Errorf("HEAD answered a body: %.300s", body)
		}
		return
	}
	p := webtest.Problem(t, resp, body, status, code)
	if field == "" {
		if len(p.Errors) != 0 {
			t.Errorf("errors = %+v, want none", p.Errors)
		}
		return
	}
	if len(p.Errors) != 1 || p.Errors[0].Field != field || p.Errors[0].Message == "" {
		t.Errorf("errors = %+v, want one naming %s, with a message", p.Errors, field)
	}
}

// checkEmptyList asserts a 200 JSON {"items": []}.
func checkEmptyList(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200; body %.300s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var page struct {
		Items []json.RawMessage `json:"items"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&page); err != nil || page.Items == nil || len(page.Items) != 0 {
		t.Errorf("body = %.300s (%v), want {\"items\":[]}", body, err)
	}
}

func rejectsBadOrderID(t *testing.T, v Views) {
	base, listRoutes := v.URL, v.Routes
	tests := []struct {
		name     string
		rawQuery string
		status   int
		code     string
	}{
		{"missing", "", 422, "validation"},
		{"only other params", v.OtherParam, 422, "validation"},
		{"name in upper case", "ORDER_ID=" + orderID, 422, "validation"},
		{"name with brackets", "order_id[]=" + orderID, 422, "validation"},
		{"empty", "order_id=", 422, "validation"},
		{"no equals sign", "order_id", 422, "validation"},
		{"blank", "order_id=%20%20", 422, "validation"},

		{"not a uuid", "order_id=not-a-uuid", 422, "validation"},
		{"uuid without dashes", "order_id=" + strings.ReplaceAll(orderID, "-", ""), 422, "validation"},
		{"uuid in braces", "order_id=%7B" + orderID + "%7D", 422, "validation"},
		{"urn", "order_id=urn:uuid:" + orderID, 422, "validation"},
		{"uuid with junk after", "order_id=" + orderID + "x", 422, "validation"},
		{"uuid with a space before", "order_id=+" + orderID, 422, "validation"},
		{"uuid with a newline after", "order_id=" + orderID + "%0A", 422, "validation"},
		{"uuid cut short", "order_id=" + orderID[:35], 422, "validation"},
		{"uuid with a non-hex digit", "order_id=" + orderID[:35] + "g", 422, "validation"},
		{"uuid with a NUL", "order_id=" + orderID[:35] + "%00", 422, "validation"},
		{"36 bytes of non-ASCII", "order_id=" + strings.Repeat("%C3%A9", 18), 422, "validation"},
		{"percent-encoded markup", "order_id=%3Cscript%3Ealert(1)%3C%2Fscript%3E", 422, "validation"},
		{"percent-encoded non-UTF-8", "order_id=%FF%FE%FD", 422, "validation"},
		{"raw non-UTF-8", "order_id=\xff\xfe\xfd", 422, "validation"},
		{"sql: or 1=1", "order_id=%27%20OR%20%271%27%3D%271", 422, "validation"},
		{"sql: comment", "order_id=" + orderID + "%27--", 422, "validation"},
		{"sql: stacked query", "order_id=" + orderID + "%27%3B%20DROP%20TABLE%20" + v.Table + "%3B--", 422, "validation"},

		{"a number", "order_id=123", 422, "validation"},
		{"a boolean", "order_id=true", 422, "validation"},
		{"null", "order_id=null", 422, "validation"},
		{"a JSON array", "order_id=%5B%22" + orderID + "%22%5D", 422, "validation"},

		{"repeated, same value", "order_id=" + orderID + "&order_id=" + orderID, 422, "validation"},
		{"repeated, two values", "order_id=" + orderID + "&order_id=0190f3b4-0000-7000-8000-000000000001", 422, "validation"},
		{"repeated, second empty", "order_id=" + orderID + "&order_id=", 422, "validation"},
		{"comma-separated", "order_id=" + orderID + "," + orderID, 422, "validation"},

		{"10 KB value", "order_id=" + strings.Repeat("9", 10<<10), 422, "validation"},
		{"10 KB after a uuid", "order_id=" + orderID + strings.Repeat("a", 10<<10), 422, "validation"},

		{"bad percent-encoding", "order_id=%ZZ", 400, "malformed_query"},
		{"truncated percent-encoding", "order_id=" + orderID + "%", 400, "malformed_query"},
		{"bad percent-encoding in the name", "order%ZZid=" + orderID, 400, "malformed_query"},
		{"bad percent-encoding in another param", "order_id=" + orderID + "&x=%G1", 400, "malformed_query"},
		{"semicolon separator", "order_id=" + orderID + ";x=1", 400, "malformed_query"},
	}
	for _, route := range listRoutes {
		for _, tt := range tests {
			t.Run(route+"/"+tt.name, func(t *testing.T) {
				field := ""
				if tt.code == "validation" {
					field = "order_id"
				}
				resp, body := send(t, v.authorization, http.MethodGet, base, route, tt.rawQuery, "")
				checkProblem(t, http.MethodGet, resp, body, tt.status, tt.code, field)
			})
		}
	}
}

// Parameters other than order_id are ignored, and so is a body on a GET: a client or a
// proxy may add either, and neither changes what is asked.
func acceptsValidOrderID(t *testing.T, v Views) {
	base, listRoutes := v.URL, v.Routes
	tests := []struct {
		name     string
		rawQuery string
		body     string
	}{
		{"order with nothing recorded", "order_id=" + orderID, ""},
		{"upper case", "order_id=" + strings.ToUpper(orderID), ""},
		{"percent-encoded", "order_id=" + strings.ReplaceAll(orderID, "-", "%2D"), ""},
		{"nil uuid", "order_id=00000000-0000-0000-0000-000000000000", ""},
		{"unknown params", "x=1&order_id=" + orderID + "&" + v.OtherParam + "&limit=lots&order_id_2=junk", ""},
		{"unknown param with an empty name", "=1&order_id=" + orderID, ""},
		{"64 KB URL of unknown params", "order_id=" + orderID + strings.Repeat("&pad=xxxxxxxxxxxxxxxx", 64<<10/21), ""},
		{"JSON body", "order_id=" + orderID, `{"order_id": 42}`},
		{"junk body", "order_id=" + orderID, "\xff\x00 not json"},
		{"64 KB body", "order_id=" + orderID, strings.Repeat("x", 64<<10)},
	}
	for _, route := range listRoutes {
		for _, tt := range tests {
			t.Run(route+"/"+tt.name, func(t *testing.T) {
				resp, body := send(t, v.authorization, http.MethodGet, base, route, tt.rawQuery, tt.body)
				checkEmptyList(t, resp, body)
			})
		}
	}
}

// Every route answers only GET (and OPTIONS, which lists what it allows). HEAD is not
// served: a 405 with the problem's headers and no body, as order-service answers it.
func wrongMethods(t *testing.T, v Views) {
	base := v.URL
	routes := append([]string{"/healthz", "/readyz"}, v.Routes...)
	for _, route := range routes {
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead, "PURGE"} {
			t.Run(method+" "+route, func(t *testing.T) {
				body := ""
				if method != http.MethodHead {
					body = `{"order_id":"` + orderID + `"}`
				}
				resp, got := send(t, v.authorization, method, base, route, "order_id="+orderID, body)
				checkProblem(t, method, resp, got, http.StatusMethodNotAllowed, "method_not_allowed", "")
				if allow := resp.Header.Get("Allow"); allow != "OPTIONS, GET" {
					t.Errorf("Allow = %q, want %q", allow, "OPTIONS, GET")
				}
			})
		}
		t.Run("OPTIONS "+route, func(t *testing.T) {
			resp, body := send(t, v.authorization, http.MethodOptions, base, route, "", "")
			if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Allow") != "OPTIONS, GET" || len(body) != 0 {
				t.Errorf("OPTIONS = %d, Allow %q, body %q; want 204, Allow \"OPTIONS, GET\" and no body",
					resp.StatusCode, resp.Header.Get("Allow"), body)
			}
		})
	}
}

func unknownRoutes(t *testing.T, v Views) {
	base := v.URL
	paths := []string{"/", "/nope", "/healthz/x", "/%FF%FE", "/\xff\xfe", "/" + strings.Repeat("a", 10<<10)}
	for _, r := range v.Routes {
		paths = append(paths, r+"/", r+"/"+orderID, strings.ToUpper(r), strings.TrimSuffix(r, "s"),
			r+"%3Forder_id="+orderID, r[:len(r)-1]+"%"+strings.ToUpper(hex.EncodeToString([]byte{r[len(r)-1]})))
	}
	for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodHead} {
		for _, path := range paths {
			t.Run(method+" "+path[:min(len(path), 40)], func(t *testing.T) {
				resp, body := send(t, v.authorization, method, base, path, "order_id="+orderID, "")
				checkProblem(t, method, resp, body, http.StatusNotFound, "not_found", "")
			})
		}
	}
}

func probesIgnoreQuery(t *testing.T, v Views) {
	base := v.URL
	for _, route := range []string{"/healthz", "/readyz"} {
		for _, q := range []string{"", "order_id=junk", "x=%ZZ", strings.Repeat("a", 10<<10)} {
			t.Run(route+"?"+q[:min(len(q), 20)], func(t *testing.T) {
				resp, body := send(t, v.authorization, http.MethodGet, base, route, q, "")
				if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
					t.Errorf("GET %s = %d %s %.200s, want 200 JSON", route, resp.StatusCode, resp.Header.Get("Content-Type"), body)
				}
			})
		}
	}
}

// Every view refuses who is not an operator: no token or one that must not get in is 401
// with a Bearer challenge, a customer's token 403; neither tells anything.
func letOnlyOperatorsIn(t *testing.T, v Views) {
	forged, err := v.Issuer.Forgeries(operator, []string{auth.ScopeOperator})
	if err != nil {
		t.Fatal(err)
	}
	customerToken, err := v.Issuer.Mint(customer, []string{auth.ScopeCustomer}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, route := range v.Routes {
		check := func(t *testing.T, authorization string, status int, code string) {
			t.Helper()
			resp, body := send(t, authorization, http.MethodGet, v.URL, route, "order_id="+orderID, "")
			checkProblem(t, http.MethodGet, resp, body, status, code, "")
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `Bearer realm="orderflow"`) {
				t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", resp.Header.Get("WWW-Authenticate"))
			}
		}
		t.Run(route+"/no token", func(t *testing.T) { check(t, "", http.StatusUnauthorized, "unauthenticated") })
		for name, tok := range forged {
			t.Run(route+"/"+name, func(t *testing.T) { check(t, "Bearer "+tok, http.StatusUnauthorized, "invalid_token") })
		}
		t.Run(route+"/a customer", func(t *testing.T) { check(t, "Bearer "+customerToken, http.StatusForbidden, "insufficient_scope") })
	}
}
