package order_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/order-service/internal/order"
)

const (
	orderID       = "019a8f3e-6c19-7d4a-8e55-0a1b2c3d4e5f"
	customerID    = issuer.Customer
	correlationID = "corr-1"
)

var now = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("CET", 3600))

// validRequest is a request New accepts; each case below breaks one thing in it.
func validRequest() order.Request {
	return order.Request{
		CustomerID:    customerID,
		CustomerEmail: "ada@example.com",
		Currency:      "EUR",
		Items: []order.Item{
			{SKU: "BOOK-1", Quantity: 2, UnitPriceCents: 1500},
			{SKU: "PEN-7", Quantity: 1, UnitPriceCents: 250},
		},
		PaymentMethod: "tok_visa",
	}
}

func items(n int) []order.Item {
	its := make([]order.Item, n)
	for i := range its {
		its[i] = order.Item{SKU: "SKU", Quantity: 1, UnitPriceCents: 100}
	}
	return its
}

// fieldsOf returns the fields a *order.ValidationError names, or fails the test when err
// is not one.
func fieldsOf(t *testing.T, err error) []string {
	t.Helper()
	var ve *order.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error = %v (%T), want a *order.ValidationError", err, err)
	}
	fields := make([]string, len(ve.Fields))
	for i, f := range ve.Fields {
		if f.Message == "" {
			t.Errorf("field %s has no message", f.Field)
		}
		if !strings.Contains(ve.Error(), f.Field) {
			t.Errorf("Error() = %q does not name %s", ve.Error(), f.Field)
		}
		fields[i] = f.Field
	}
	return fields
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name   string
		modify func(r *order.Request)
		want   []string // invalid fields; none means the request is valid
	}{
		{"valid", func(r *order.Request) {}, nil},

		{"customer_id missing", func(r *order.Request) { r.CustomerID = "" }, []string{"customer_id"}},
		{"customer_id not a uuid", func(r *order.Request) { r.CustomerID = "customer-42" }, []string{"customer_id"}},
		{"customer_id without dashes", func(r *order.Request) { r.CustomerID = strings.ReplaceAll(customerID, "-", "") }, []string{"customer_id"}},
		{"customer_id in braces", func(r *order.Request) { r.CustomerID = "{" + customerID + "}" }, []string{"customer_id"}},
		{"customer_id urn", func(r *order.Request) { r.CustomerID = "urn:uuid:" + customerID }, []string{"customer_id"}},
		{"customer_id one digit short", func(r *order.Request) { r.CustomerID = customerID[:35] }, []string{"customer_id"}},
		{"customer_id in capitals", func(r *order.Request) { r.CustomerID = strings.ToUpper(customerID) }, nil},

		{"customer_email missing", func(r *order.Request) { r.CustomerEmail = "" }, []string{"customer_email"}},
		{"customer_email without at", func(r *order.Request) { r.CustomerEmail = "ada.example.com" }, []string{"customer_email"}},
		{"customer_email without domain", func(r *order.Request) { r.CustomerEmail = "ada@" }, []string{"customer_email"}},
		{"customer_email without local part", func(r *order.Request) { r.CustomerEmail = "@example.com" }, []string{"customer_email"}},
		{"customer_email domain without dot", func(r *order.Request) { r.CustomerEmail = "ada@localhost" }, []string{"customer_email"}},
		{"customer_email with display name", func(r *order.Request) { r.CustomerEmail = "Ada <ada@example.com>" }, []string{"customer_email"}},
		{"customer_email in angle brackets", func(r *order.Request) { r.CustomerEmail = "<ada@example.com>" }, []string{"customer_email"}},
		{"customer_email with space", func(r *order.Request) { r.CustomerEmail = "ada lovelace@example.com" }, []string{"customer_email"}},
		{"customer_email two ats", func(r *order.Request) { r.CustomerEmail = "ada@@example.com" }, []string{"customer_email"}},
		{"customer_email 254 chars", func(r *order.Request) { r.CustomerEmail = email(order.MaxEmailLength) }, nil},
		{"customer_email 255 chars", func(r *order.Request) { r.CustomerEmail = email(order.MaxEmailLength + 1) }, []string{"customer_email"}},
		{"customer_email plus tag", func(r *order.Request) { r.CustomerEmail = "ada+shop@mail.example.co.uk" }, nil},

		{"currency missing", func(r *order.Request) { r.Currency = "" }, []string{"currency"}},
		{"currency lower case", func(r *order.Request) { r.Currency = "eur" }, []string{"currency"}},
		{"currency mixed case", func(r *order.Request) { r.Currency = "Eur" }, []string{"currency"}},
		{"currency two letters", func(r *order.Request) { r.Currency = "EU" }, []string{"currency"}},
		{"currency four letters", func(r *order.Request) { r.Currency = "EURO" }, []string{"currency"}},
		{"currency not in ISO 4217", func(r *order.Request) { r.Currency = "XYZ" }, []string{"currency"}},
		{"currency numeric code", func(r *order.Request) { r.Currency = "978" }, []string{"currency"}},
		{"currency padded", func(r *order.Request) { r.Currency = " EUR" }, []string{"currency"}},
		{"currency USD", func(r *order.Request) { r.Currency = "USD" }, nil},
		{"currency JPY", func(r *order.Request) { r.Currency = "JPY" }, nil},

		{"items missing", func(r *order.Request) { r.Items = nil }, []string{"items"}},
		{"items empty", func(r *order.Request) { r.Items = []order.Item{} }, []string{"items"}},
		{"items 1", func(r *order.Request) { r.Items = items(1) }, nil},
		{"items 100", func(r *order.Request) { r.Items = items(order.MaxItems) }, nil},
		{"items 101", func(r *order.Request) { r.Items = items(order.MaxItems + 1) }, []string{"items"}},

		{"sku missing", func(r *order.Request) { r.Items[0].SKU = "" }, []string{"items[0].sku"}},
		{"sku with NUL", func(r *order.Request) { r.Items[0].SKU = "BOOK\u000042" }, []string{"items[0].sku"}},
		{"sku with a tab", func(r *order.Request) { r.Items[0].SKU = "BOOK\t42" }, []string{"items[0].sku"}},
		{"sku in Unicode", func(r *order.Request) { r.Items[0].SKU = "LIVRE-été-書" }, nil},
		{"payment_method with NUL", func(r *order.Request) { r.PaymentMethod = "tok_\u0000visa" }, []string{"payment_method"}},
		{"sku 1 char", func(r *order.Request) { r.Items[0].SKU = "A" }, nil},
		{"sku 64 chars", func(r *order.Request) { r.Items[0].SKU = strings.Repeat("S", 64) }, nil},
		{"sku 65 chars", func(r *order.Request) { r.Items[0].SKU = strings.Repeat("S", 65) }, []string{"items[0].sku"}},
		{"sku of second item", func(r *order.Request) { r.Items[1].SKU = "" }, []string{"items[1].sku"}},

		{"quantity 0", func(r *order.Request) { r.Items[0].Quantity = 0 }, []string{"items[0].quantity"}},
		{"quantity negative", func(r *order.Request) { r.Items[0].Quantity = -1 }, []string{"items[0].quantity"}},
		{"quantity 1", func(r *order.Request) { r.Items[0].Quantity = 1 }, nil},
		{"quantity 1000", func(r *order.Request) { r.Items[0].Quantity = 1000 }, nil},
		{"quantity 1001", func(r *order.Request) { r.Items[0].Quantity = 1001 }, []string{"items[0].quantity"}},
		{"quantity of second item", func(r *order.Request) { r.Items[1].Quantity = 0 }, []string{"items[1].quantity"}},

		{"unit_price_cents 0", func(r *order.Request) { r.Items[0].UnitPriceCents = 0 }, []string{"items[0].unit_price_cents"}},
		{"unit_price_cents negative", func(r *order.Request) { r.Items[0].UnitPriceCents = -500 }, []string{"items[0].unit_price_cents"}},
		{"unit_price_cents 1", func(r *order.Request) { r.Items[0].UnitPriceCents = 1 }, nil},
		{"unit_price_cents 1e9", func(r *order.Request) { r.Items[0].UnitPriceCents = 1_000_000_000 }, nil},
		{"unit_price_cents 1e9+1", func(r *order.Request) { r.Items[0].UnitPriceCents = 1_000_000_001 }, []string{"items[0].unit_price_cents"}},
		{"unit_price_cents of second item", func(r *order.Request) { r.Items[1].UnitPriceCents = 0 }, []string{"items[1].unit_price_cents"}},

		{"payment_method missing", func(r *order.Request) { r.PaymentMethod = "" }, []string{"payment_method"}},
		{"payment_method 255 chars", func(r *order.Request) { r.PaymentMethod = strings.Repeat("p", 255) }, nil},
		{"payment_method 256 chars", func(r *order.Request) { r.PaymentMethod = strings.Repeat("p", 256) }, []string{"payment_method"}},

		{"largest order", func(r *order.Request) {
			r.Items = items(order.MaxItems)
			for i := range r.Items {
				r.Items[i].Quantity, r.Items[i].UnitPriceCents = order.MaxQuantity, order.MaxUnitPriceCents
			}
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := validRequest()
			tt.modify(&req)
			o, err := order.New(req, orderID, correlationID, now)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("New: %v, want no error", err)
				}
				if o.Status != order.PendingPayment {
					t.Errorf("status = %s, want %s", o.Status, order.PendingPayment)
				}
				return
			}
			if err == nil {
				t.Fatalf("New accepted the request, want fields %v rejected", tt.want)
			}
			if got := fieldsOf(t, err); !slices.Equal(got, tt.want) {
				t.Errorf("invalid fields = %v, want %v", got, tt.want)
			}
			if o.ID != "" {
				t.Errorf("New returned order %+v along with its error", o)
			}
		})
	}
}

// email returns a valid address n bytes long.
func email(n int) string {
	const domain = "@example.com"
	return strings.Repeat("a", n-len(domain)) + domain
}

func TestNewNamesEveryInvalidField(t *testing.T) {
	req := order.Request{
		CustomerID:    "nope",
		CustomerEmail: "not-an-email",
		Currency:      "eur",
		Items: []order.Item{
			{SKU: "", Quantity: 1, UnitPriceCents: 100},
			{SKU: "OK", Quantity: 0, UnitPriceCents: 100},
			{SKU: strings.Repeat("S", 65), Quantity: 1001, UnitPriceCents: 1_000_000_001},
		},
		PaymentMethod: "",
	}
	_, err := order.New(req, orderID, correlationID, now)
	got := fieldsOf(t, err)
	want := []string{
		"customer_id", "customer_email", "currency", "payment_method",
		"items[0].sku", "items[1].quantity",
		"items[2].sku", "items[2].quantity", "items[2].unit_price_cents",
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("invalid fields = %v, want %v", got, want)
	}

	req = validRequest()
	req.CustomerID, req.Items = "", nil
	got = fieldsOf(t, mustFail(t, req))
	if want := []string{"customer_id", "items"}; !slices.Equal(got, want) {
		t.Errorf("invalid fields = %v, want %v", got, want)
	}
}

// However much of a request is wrong, New lists the first order.MaxFieldErrors fields
// and counts the rest; too many items is one error, the items unchecked.
func TestNewBoundsFieldErrors(t *testing.T) {
	empty := func(n int) []order.Item { return make([]order.Item, n) } // each: sku, quantity, unit_price_cents
	tests := []struct {
		name    string
		items   []order.Item
		first   []string // the first fields listed
		listed  int
		omitted int
	}{
		{"one empty item", empty(1), []string{"items[0].sku", "items[0].quantity", "items[0].unit_price_cents"}, 3, 0},
		{"seven empty items: 21 errors", empty(7), []string{"items[0].sku"}, order.MaxFieldErrors, 1},
		{"100 empty items", empty(order.MaxItems), []string{"items[0].sku", "items[0].quantity"}, order.MaxFieldErrors, 3*order.MaxItems - order.MaxFieldErrors},
		{"101 empty items", empty(order.MaxItems + 1), []string{"items"}, 1, 0},
		{"10000 empty items", empty(10_000), []string{"items"}, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := validRequest()
			req.Items = tt.items
			var ve *order.ValidationError
			if err := mustFail(t, req); !errors.As(err, &ve) {
				t.Fatalf("error = %v (%T), want a *order.ValidationError", err, err)
			}
			// Not fieldsOf: it formats Error() once per field, slow when the bound fails.
			got := make([]string, len(ve.Fields))
			for i, f := range ve.Fields {
				got[i] = f.Field
			}
			if len(got) != tt.listed || !slices.Equal(got[:min(len(tt.first), len(got))], tt.first) || ve.Omitted != tt.omitted {
				t.Errorf("%d fields starting %v, %d omitted; want %d starting %v, %d omitted",
					len(got), got[:min(len(tt.first), len(got))], ve.Omitted, tt.listed, tt.first, tt.omitted)
			}
			if msg, want := ve.Error(), fmt.Sprintf("; and %d more", tt.omitted); (tt.omitted > 0) != strings.HasSuffix(msg, want) || strings.Count(msg, "; ") > order.MaxFieldErrors {
				t.Errorf("Error() of %d bytes ends %q, want %d fields at most, then %q only when fields are omitted", len(msg), msg[max(0, len(msg)-40):], order.MaxFieldErrors, want)
			}
			if len(got) == 1 {
				if want := fmt.Sprintf("must hold at most %d items, got %d", order.MaxItems, len(tt.items)); ve.Fields[0].Message != want {
					t.Errorf("items: %q, want %q", ve.Fields[0].Message, want)
				}
			}
		})
	}
}

// A ValidationError built by hand, without Add, is still shown within the bound.
func TestValidationErrorListed(t *testing.T) {
	ve := &order.ValidationError{Omitted: 2, Of: "query"}
	for i := range order.MaxFieldErrors + 5 {
		ve.Fields = append(ve.Fields, order.FieldError{Field: fmt.Sprintf("f%d", i), Message: "is wrong"})
	}
	fields, omitted := ve.Listed()
	if len(fields) != order.MaxFieldErrors || fields[0].Field != "f0" || omitted != 7 {
		t.Errorf("Listed() = %d fields from %s, %d omitted; want %d from f0, 7 omitted", len(fields), fields[0].Field, omitted, order.MaxFieldErrors)
	}
	if got, want := ve.Error(), "f19: is wrong; and 7 more"; !strings.HasPrefix(got, "invalid query: f0: is wrong; ") || !strings.HasSuffix(got, want) || strings.Contains(got, "f20") {
		t.Errorf("Error() = %q, want f0 to f19 and then %q", got, want)
	}
}

func mustFail(t *testing.T, req order.Request) error {
	t.Helper()
	_, err := order.New(req, orderID, correlationID, now)
	if err == nil {
		t.Fatal("New accepted an invalid request")
	}
	return err
}

func TestNewBuildsPendingOrder(t *testing.T) {
	req := validRequest()
	req.CustomerID = strings.ToUpper(customerID)
	o, err := order.New(req, orderID, correlationID, now)
	if err != nil {
		t.Fatal(err)
	}
	if o.ID != orderID {
		t.Errorf("id = %q, want %q", o.ID, orderID)
	}
	if o.CustomerID != customerID {
		t.Errorf("customer_id = %q, want it lower-cased to %q", o.CustomerID, customerID)
	}
	if o.CustomerEmail != "ada@example.com" || o.Currency != "EUR" || o.PaymentMethod != "tok_visa" {
		t.Errorf("order = %+v, want the request's email, currency and payment method", o)
	}
	if !slices.Equal(o.Items, req.Items) {
		t.Errorf("items = %+v, want %+v", o.Items, req.Items)
	}
	if o.TotalCents != 2*1500+250 {
		t.Errorf("total_cents = %d, want %d", o.TotalCents, 2*1500+250)
	}
	if o.Status != order.PendingPayment {
		t.Errorf("status = %s, want %s", o.Status, order.PendingPayment)
	}
	if o.FailureReason != "" {
		t.Errorf("failure_reason = %q, want none", o.FailureReason)
	}
	if o.CorrelationID != correlationID {
		t.Errorf("correlation_id = %q, want %q", o.CorrelationID, correlationID)
	}
	// Kept to the microsecond, as PostgreSQL stores it, so POST and GET answer alike.
	if want := now.Truncate(time.Microsecond); !o.CreatedAt.Equal(want) || !o.UpdatedAt.Equal(want) || o.CreatedAt.Location() != time.UTC {
		t.Errorf("created_at, updated_at = %v, %v, want %v in UTC", o.CreatedAt, o.UpdatedAt, want.UTC())
	}
}

func TestNewTotal(t *testing.T) {
	tests := []struct {
		name  string
		items []order.Item
		want  int64
	}{
		{"one item", []order.Item{{SKU: "A", Quantity: 1, UnitPriceCents: 999}}, 999},
		{"quantity multiplies", []order.Item{{SKU: "A", Quantity: 3, UnitPriceCents: 1234}}, 3702},
		{"items add up", []order.Item{
			{SKU: "A", Quantity: 2, UnitPriceCents: 1500},
			{SKU: "B", Quantity: 1, UnitPriceCents: 250},
			{SKU: "C", Quantity: 7, UnitPriceCents: 1},
		}, 3257},
		{"largest line", []order.Item{{SKU: "A", Quantity: 1000, UnitPriceCents: 1_000_000_000}}, 1_000_000_000_000},
		{"largest order", func() []order.Item {
			its := items(order.MaxItems)
			for i := range its {
				its[i].Quantity, its[i].UnitPriceCents = order.MaxQuantity, order.MaxUnitPriceCents
			}
			return its
		}(), 100 * 1000 * 1_000_000_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := validRequest()
			req.Items = tt.items
			o, err := order.New(req, orderID, correlationID, now)
			if err != nil {
				t.Fatal(err)
			}
			if o.TotalCents != tt.want {
				t.Errorf("total_cents = %d, want %d", o.TotalCents, tt.want)
			}
		})
	}
}

func TestTransition(t *testing.T) {
	statuses := []order.Status{order.PendingPayment, order.Confirmed, order.PaymentFailed, order.Cancelled}
	// Statuses that do not exist must be refused too, not written to the order.
	targets := append(slices.Clone(statuses), order.Status("SHIPPED"), order.Status(""))
	allowed := map[order.Status]bool{order.Confirmed: true, order.PaymentFailed: true, order.Cancelled: true}
	later := now.Add(time.Minute)

	for _, from := range statuses {
		for _, to := range targets {
			t.Run(string(from)+"→"+string(to), func(t *testing.T) {
				o, err := order.New(validRequest(), orderID, correlationID, now)
				if err != nil {
					t.Fatal(err)
				}
				o.Status = from
				before := o

				err = o.Transition(to, "card_declined", later)

				if from == order.PendingPayment && allowed[to] {
					if err != nil {
						t.Fatalf("Transition: %v, want it allowed", err)
					}
					if o.Status != to {
						t.Errorf("status = %s, want %s", o.Status, to)
					}
					wantReason := ""
					if to == order.PaymentFailed {
						wantReason = "card_declined"
					}
					if o.FailureReason != wantReason {
						t.Errorf("failure_reason = %q, want %q", o.FailureReason, wantReason)
					}
					if want := later.Truncate(time.Microsecond); !o.UpdatedAt.Equal(want) || o.UpdatedAt.Location() != time.UTC {
						t.Errorf("updated_at = %v, want %v in UTC", o.UpdatedAt, want.UTC())
					}
					if !o.CreatedAt.Equal(before.CreatedAt) {
						t.Errorf("created_at = %v, want it unchanged at %v", o.CreatedAt, before.CreatedAt)
					}
					return
				}
				if !errors.Is(err, order.ErrInvalidTransition) {
					t.Fatalf("Transition error = %v, want one wrapping order.ErrInvalidTransition", err)
				}
				if o.Status != before.Status || o.FailureReason != before.FailureReason || !o.UpdatedAt.Equal(before.UpdatedAt) {
					t.Errorf("order changed by a refused transition: %+v, was %+v", o, before)
				}
			})
		}
	}
}

func TestTransitionFailureReasonOnlyForPaymentFailed(t *testing.T) {
	tests := []struct {
		to     order.Status
		reason string
		want   string
	}{
		{order.PaymentFailed, "insufficient_funds", "insufficient_funds"},
		{order.PaymentFailed, "", ""},
		{order.Confirmed, "insufficient_funds", ""},
		{order.Cancelled, "customer asked", ""},
	}
	for _, tt := range tests {
		o, err := order.New(validRequest(), orderID, correlationID, now)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.Transition(tt.to, tt.reason, now); err != nil {
			t.Fatalf("Transition(%s): %v", tt.to, err)
		}
		if o.FailureReason != tt.want {
			t.Errorf("Transition(%s, %q): failure_reason = %q, want %q", tt.to, tt.reason, o.FailureReason, tt.want)
		}
	}
}

func TestTransitionOnlyOnce(t *testing.T) {
	o, err := order.New(validRequest(), orderID, correlationID, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Transition(order.PaymentFailed, "card_declined", now); err != nil {
		t.Fatal(err)
	}
	err = o.Transition(order.Confirmed, "", now)
	if !errors.Is(err, order.ErrInvalidTransition) {
		t.Fatalf("second Transition error = %v, want order.ErrInvalidTransition", err)
	}
	if o.Status != order.PaymentFailed || o.FailureReason != "card_declined" {
		t.Errorf("order = %s (%q), want it left PAYMENT_FAILED (card_declined)", o.Status, o.FailureReason)
	}
}
