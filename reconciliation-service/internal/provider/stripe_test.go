package provider_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderflow/common-events/events"
	"github.com/orderflow/devstack/testenv"
	"github.com/orderflow/reconciliation-service/internal/provider"
)

// A page of the listing holds 100 intents: more than that before the order's charge
// puts it on the second page of localstripe's list, which is oldest first.
const fillers = 101

// Charges are the succeeded intents of orders in the window, each under its intent's
// id, from every page of the list: not a declined intent, nor a charge made for no
// order, nor anything before the window. A proxy in front of localstripe (which
// tools/localstripe/serve.py teaches the created filter) takes the filter off and keeps
// what was asked: the server then is a stand-in that lists beyond the window, and the
// window the adapter itself keeps is what is tested.
func TestStripeChargesAreTheSucceededIntentsOfOrders(t *testing.T) {
	t.Parallel()
	ls := testenv.StartLocalstripe(t)
	asked := &intentListings{}
	s := provider.NewStripe(provider.StripeConfig{APIKey: "sk_test_123", BaseURL: asked.proxy(t, ls.URL)})
	ctx := context.Background()

	before := time.Now()
	for range fillers {
		createIntent(t, ls, url.Values{"payment_method": {"pm_card_visa"}}) // never confirmed
	}
	a, b := events.NewID(before), events.NewID(before)
	charged := createIntent(t, ls, url.Values{"payment_method": {"pm_card_visa"}, "metadata[order_id]": {a}})
	ls.API(t, http.MethodPost, "/v1/payment_intents/"+charged+"/confirm", nil, nil)
	declined := createIntent(t, ls, url.Values{"payment_method": {ls.Card(t, "4000000000000341")}, "metadata[order_id]": {b}})
	if code := confirmDeclined(t, ls, declined); code != http.StatusPaymentRequired {
		t.Fatalf("confirming the declined card's intent = %d, want 402", code)
	}
	notOurs := createIntent(t, ls, url.Values{"payment_method": {"pm_card_visa"}})
	ls.API(t, http.MethodPost, "/v1/payment_intents/"+notOurs+"/confirm", nil, nil)
	after := time.Now()

	got, err := s.Charges(ctx, before, after)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].OrderID != a || got[0].ChargeID != charged ||
		got[0].At.Unix() < before.Unix() || got[0].At.After(after) {
		t.Fatalf("charges in [%v, %v) = %+v, want only order %s's, charge %s", before, after, got, a, charged)
	}
	lt := after.Unix()
	if after.Nanosecond() != 0 {
		lt++
	}
	if q := asked.first(t); q.Get("created[gte]") != fmt.Sprint(before.Unix()) || q.Get("created[lt]") != fmt.Sprint(lt) {
		t.Errorf("asked Stripe for %v, want created in [%d, %d): the window widened to whole seconds", q, before.Unix(), lt)
	}

	end := before.Truncate(time.Second) // the intents' second is not before it
	if got, err := s.Charges(ctx, end.Add(-time.Hour), end); err != nil || len(got) != 0 {
		t.Fatalf("charges before them = %+v, %v; want none", got, err)
	}

	// Asked by the id payment.completed would name: the order's succeeded intent only.
	for _, tt := range []struct {
		order, charge string
		want          bool
	}{{a, charged, true}, {b, declined, false}, {b, charged, false}, {a, "pi_missing", false}, {a, "ch_simulator", false}} {
		c, found, err := s.Lookup(ctx, tt.order, tt.charge)
		if err != nil || found != tt.want || found && (c.ChargeID != charged || c.OrderID != a) {
			t.Errorf("Lookup(%s, %s) = %+v, %v, %v; want found %v", tt.order, tt.charge, c, found, err, tt.want)
		}
	}
}

// createIntent creates a PaymentIntent on localstripe and returns its id.
func createIntent(t *testing.T, ls *testenv.Localstripe, form url.Values) string {
	t.Helper()
	form.Set("amount", "4348")
	form.Set("currency", "eur")
	form.Set("payment_method_types[0]", "card")
	var pi struct{ ID string }
	ls.API(t, http.MethodPost, "/v1/payment_intents", form, &pi)
	return pi.ID
}

// confirmDeclined confirms intent and returns the status of the answer, as API stops the
// test at anything but a 200 and a decline is a 402.
func confirmDeclined(t *testing.T, ls *testenv.Localstripe, intent string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ls.URL+"/v1/payment_intents/"+intent+"/confirm", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("sk_test_123", "")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// intentListings is what the adapter asked the list of PaymentIntents for.
type intentListings struct {
	mu      sync.Mutex
	queries []url.Values
}

// proxy forwards to target, taking the created filter off each listing of intents.
func (l *intentListings) proxy(t *testing.T, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(u)
		if r.In.Method != http.MethodGet || r.In.URL.Path != "/v1/payment_intents" {
			return
		}
		q := r.In.URL.Query()
		l.mu.Lock()
		l.queries = append(l.queries, q)
		l.mu.Unlock()
		q = maps.Clone(q)
		for k := range q {
			if strings.HasPrefix(k, "created") {
				q.Del(k)
			}
		}
		r.Out.URL.RawQuery = q.Encode()
	}})
	t.Cleanup(srv.Close)
	return srv.URL
}

func (l *intentListings) first(t *testing.T) url.Values {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queries) == 0 {
		t.Fatal("the adapter never listed the intents")
	}
	return l.queries[0]
}
