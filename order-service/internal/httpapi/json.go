package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/orderflow/common-events/web"
	"github.com/orderflow/order-service/internal/order"
)

type itemJSON struct {
	SKU            string `json:"sku"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

type createRequest struct {
	CustomerID    string `json:"customer_id"`
	CustomerEmail string `json:"customer_email"`
	Currency      string `json:"currency"`
	// Items are decoded one by one, so an error names the item: items[2].quantity.
	Items         itemList `json:"items"`
	PaymentMethod string   `json:"payment_method"`
}

// itemList is the items array as raw items: the first order.MaxItems of them, and how
// many it holds. Items past those are counted, never kept, so a body of a million empty
// items costs no more memory than one of a hundred.
type itemList struct {
	raw []json.RawMessage
	n   int
}

func (l *itemList) UnmarshalJSON(data []byte) error {
	// encoding/json has checked data is one well-formed value; only its kind is unknown.
	switch data[0] {
	case 'n':
		*l = itemList{} // null: no items, as when the field is left out
		return nil
	case '[':
	default:
		// The *json.UnmarshalTypeError encoding/json gives for a non-array; it names
		// no field, and encoding/json adds "items" to it on the way out.
		var notArray []json.RawMessage
		return json.Unmarshal(data, &notArray)
	}
	*l = itemList{}
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // [
		return err
	}
	var raw json.RawMessage // one buffer for every item, copied only for those kept
	for dec.More() {
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		if l.n < order.MaxItems {
			l.raw = append(l.raw, bytes.Clone(raw))
		}
		l.n++
	}
	return nil
}

type orderJSON struct {
	ID            string     `json:"id"`
	Status        string     `json:"status"`
	CustomerID    string     `json:"customer_id"`
	CustomerEmail string     `json:"customer_email"`
	Currency      string     `json:"currency"`
	Items         []itemJSON `json:"items"`
	TotalCents    int64      `json:"total_cents"`
	FailureReason string     `json:"failure_reason,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

func toJSON(o order.Order) orderJSON {
	items := make([]itemJSON, len(o.Items))
	for i, it := range o.Items {
		items[i] = itemJSON(it)
	}
	return orderJSON{
		ID: o.ID, Status: string(o.Status), CustomerID: o.CustomerID, CustomerEmail: o.CustomerEmail,
		Currency: o.Currency, Items: items, TotalCents: o.TotalCents, FailureReason: o.FailureReason,
		CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt,
	}
}

type changeJSON struct {
	OrderID      string    `json:"order_id,omitempty"`
	From         string    `json:"from,omitempty"`
	To           string    `json:"to"`
	CauseEventID string    `json:"cause_event_id"`
	Reason       string    `json:"reason,omitempty"`
	At           time.Time `json:"at"`
}

func toChangeJSON(orderID string, ch order.Change) changeJSON {
	return changeJSON{OrderID: orderID, From: string(ch.From), To: string(ch.To), CauseEventID: ch.CauseEventID, Reason: ch.Reason, At: ch.At.UTC()}
}

// parseCreate reads a create-order request: the body decoded strictly, each item on its
// own so an error names it. It returns a *web.Problem (400, 413, 415) or an
// *order.ValidationError (422) for a bad request; order.New validates the rest. Too many
// items is answered on the count alone, before any item is decoded.
func parseCreate(contentType string, body io.Reader) (order.Request, error) {
	var req createRequest
	if err := web.DecodeJSON(contentType, body, MaxBodyBytes, &req); err != nil {
		return order.Request{}, asValidation(err)
	}
	if req.Items.n > order.MaxItems {
		return order.Request{}, &order.ValidationError{Fields: []order.FieldError{order.TooManyItems(req.Items.n)}}
	}
	items := make([]order.Item, len(req.Items.raw))
	var ve order.ValidationError
	for i, raw := range req.Items.raw {
		var it itemJSON
		if err := web.UnmarshalStrict(raw, fmt.Sprintf("items[%d]", i), &it); err != nil {
			addFields(&ve, err)
			continue
		}
		items[i] = order.Item(it)
	}
	if len(ve.Fields) > 0 {
		return order.Request{}, &ve
	}
	return order.Request{
		CustomerID: req.CustomerID, CustomerEmail: req.CustomerEmail, Currency: req.Currency,
		Items: items, PaymentMethod: req.PaymentMethod,
	}, nil
}
