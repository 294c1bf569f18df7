package web

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5/pgconn"
)

// Problem codes for a dependency that cannot serve the request now: the service's
// trouble, not the request's, so a 503 with Retry-After, never a 500. They name the kind of
// failure, never an address, a user or a connection string.
const (
	CodeDatabaseUnavailable = "database_unavailable" // cannot connect, or the connection was lost
	CodeDatabaseTimeout     = "database_timeout"     // connected, but it did not answer in time
	CodeBrokerUnavailable   = "broker_unavailable"
)

// retryAfter is the Retry-After of a dependency's 503, in seconds: long enough not to
// hammer a database that is restarting, short enough that a client barely notices a blip.
const retryAfter = 2

// dependencyProblem returns the 503 for err when err says a dependency cannot be reached
// or did not answer, else nil.
func dependencyProblem(err error) *Problem {
	var code, detail string
	switch {
	case databaseTimeout(err):
		code, detail = CodeDatabaseTimeout, "the database did not answer in time"
	case databaseUnreachable(err):
		code, detail = CodeDatabaseUnavailable, "the database cannot be reached"
	case brokerUnreachable(err):
		code, detail = CodeBrokerUnavailable, "the message broker cannot be reached"
	default:
		return nil
	}
	p := NewProblem(http.StatusServiceUnavailable, code, "Service Unavailable",
		detail+"; nothing was changed unless the request says otherwise — retry after Retry-After seconds (an order with the same Idempotency-Key)")
	p.RetryAfter = retryAfter
	return p
}

// databaseUnreachable: no connection could be made, or the one in use was lost, or the
// server refuses work while it starts, stops or is full.
func databaseUnreachable(err error) bool {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// Class 08: connection exception; 57P01-57P03: admin shutdown, crash shutdown,
		// cannot connect now (starting up); 53300: too many connections.
		return strings.HasPrefix(pe.Code, "08") || pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03" || pe.Code == "53300"
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) ||
		strings.Contains(err.Error(), "conn closed")
}

// databaseTimeout: a statement or a wait for a connection ran out of time while the
// request itself was still there (a client that left is no one's 503).
func databaseTimeout(err error) bool {
	var ne net.Error
	return !errors.Is(err, context.Canceled) && (errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout())
}

func brokerUnreachable(err error) bool {
	return errors.Is(err, sarama.ErrOutOfBrokers) || errors.Is(err, sarama.ErrNotConnected) || errors.Is(err, sarama.ErrClosedClient)
}
