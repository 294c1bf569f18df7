package httpapi

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/orderflow/common-events/web"
	"github.com/orderflow/order-service/internal/order"
)

// problemFor decides the status of every domain error, in one place.
func problemFor(err error) *web.Problem {
	var ve *order.ValidationError
	var te *order.TransitionError
	switch {
	case errors.As(err, &ve):
		p := web.NewProblem(http.StatusUnprocessableEntity, "validation", "Your request is not valid", ve.Error())
		fields, omitted := ve.Listed()
		for _, f := range fields {
			p.Errors = append(p.Errors, web.FieldError{Field: f.Field, Message: f.Message})
		}
		p.ErrorsOmitted = omitted
		return p
	case errors.As(err, &te) && te.To == order.Cancelled:
		return web.NewProblem(http.StatusConflict, "order_not_cancellable", "Order cannot be cancelled",
			fmt.Sprintf("the order is %s; only a %s order can be cancelled", te.From, order.PendingPayment))
	case errors.Is(err, order.ErrNotFound):
		return web.NewProblem(http.StatusNotFound, "not_found", "Order not found", "no order has this id")
	case errors.Is(err, order.ErrIdempotencyKeyReused):
		return web.NewProblem(http.StatusUnprocessableEntity, "idempotency_key_reused", "Idempotency key reused",
			"this Idempotency-Key was first used with a different request; use a new key for a new order")
	case errors.Is(err, order.ErrIdempotencyKeyInFlight):
		return web.NewProblem(http.StatusConflict, "idempotency_key_in_flight", "Request in flight",
			"a request with this Idempotency-Key is being processed; retry in a moment")
	}
	return nil
}

// withOtherCustomer adds to err, the request's validation errors if any, that its
// customer_id names another customer than the token.
func withOtherCustomer(err error) error {
	out := &order.ValidationError{}
	out.Add(order.FieldError{Field: "customer_id", Message: "must be left out or be the customer the bearer token names"})
	// Rebuilt through Add, so the bound holds with this error first.
	if ve := (*order.ValidationError)(nil); errors.As(err, &ve) {
		fields, omitted := ve.Listed()
		for _, f := range fields {
			out.Add(f)
		}
		out.Omitted += omitted
		out.Of = ve.Of
	}
	return out
}

// asValidation is err, a decoding error, with the fields a *web.FieldsError names as the
// order's validation errors (422), so they are listed and bounded like the rest.
func asValidation(err error) error {
	ve := &order.ValidationError{}
	if !addFields(ve, err) {
		return err
	}
	return ve
}

// addFields adds to ve the fields a *web.FieldsError err names, and says whether err is one.
func addFields(ve *order.ValidationError, err error) bool {
	var fe *web.FieldsError
	if !errors.As(err, &fe) {
		return false
	}
	for _, f := range fe.Fields {
		ve.Add(order.FieldError(f))
	}
	return true
}
