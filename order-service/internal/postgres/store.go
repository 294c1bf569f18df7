// Package postgres stores orders, their history and their outbox events in the orders
// database.
package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/common-events/coalesce"
	"github.com/orderflow/common-events/events"
	"github.com/orderflow/common-events/outbox"
	"github.com/orderflow/common-events/prune"
	"github.com/orderflow/order-service/internal/order"
)

// Store is the orders database. Its writes store each change with its event; waking
// the outbox relay afterwards is the caller's (package orders).
type Store struct {
	pool    *pgxpool.Pool
	creates *coalesce.Batcher[placed, struct{}]
	placed  *placedOrders
}

// NewStore returns a store on pool.
func NewStore(pool *pgxpool.Pool) *Store {
	s := &Store{pool: pool, placed: newPlacedOrders(maxRemembered)}
	s.creates = coalesce.New(s.createAll, coalesce.Options{Max: maxCreates, Alone: coalesce.ByRow})
	return s
}

// maxCreates is the most orders one statement writes.
const maxCreates = 128

type itemJSON struct {
	SKU            string `json:"sku"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

// placed is an order to create and its events.
type placed struct {
	order  order.Order
	events []events.Envelope
}

// Create writes the order, its first history entry and its events (order.created,
// order.state), and returns once they are committed: either the order exists and its
// events will be published, or neither. The orders placed at the same time are written
// together, in one statement and one commit (group commit): a lone order waits for
// nobody, and under load a commit serves many.
func (s *Store) Create(ctx context.Context, o order.Order, evs []events.Envelope) error {
	if _, err := s.creates.Do(ctx, placed{o, evs}); err != nil {
		return fmt.Errorf("create order %s: %w", o.ID, err)
	}
	return nil
}

// createAll writes ps in one statement (one implicit transaction). When it fails for what
// one order holds (a constraint, a value out of range), the Batcher writes each again on
// its own, so that only that order fails.
func (s *Store) createAll(ctx context.Context, ps []placed) ([]struct{}, error) {
	sql, args := createStatement(ps, nil)
	if _, err := s.pool.Exec(ctx, sql, args...); err != nil {
		return nil, err
	}
	for _, p := range ps {
		s.placed.add(p.order)
	}
	return make([]struct{}, len(ps)), nil
}

// idempotency is an Idempotency-Key with the request it came with and the response to
// replay.
type idempotency struct {
	key, requestHash string
	status           int
	response         []byte
}

// createStatement writes the orders, their history entries and their events (each
// order's first event the cause of its history entry) and, with idem, the idempotency key
// of the one order (replacing an expired one).
func createStatement(ps []placed, idem *idempotency) (string, []any) {
	n := len(ps)
	ids, customers, emails, currencies := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	items, totals, methods, statuses := make([]string, n), make([]int64, n), make([]string, n), make([]string, n)
	correlations, causes, created := make([]string, n), make([]string, n), make([]time.Time, n)
	var evt outbox.Rows
	for i, p := range ps {
		o := p.order
		ids[i], customers[i], emails[i], currencies[i] = o.ID, o.CustomerID, o.CustomerEmail, o.Currency
		its := make([]itemJSON, len(o.Items))
		for j, it := range o.Items {
			its[j] = itemJSON(it)
		}
		js, _ := json.Marshal(its) // a slice of plain structs always marshals
		items[i] = string(js)
		totals[i], methods[i], statuses[i] = o.TotalCents, o.PaymentMethod, string(o.Status)
		correlations[i], causes[i], created[i] = o.CorrelationID, p.events[0].ID, o.CreatedAt
		for _, env := range p.events {
			evt.Add(i, env)
		}
	}
	args := []any{ids, customers, emails, currencies, items, totals, methods, statuses, correlations, created, causes}
	var keySQL string
	if idem != nil {
		args = append(args, idem.key, idem.requestHash, idem.status, idem.response)
		keySQL = `,
		idem AS (
			INSERT INTO idempotency_keys (customer_id, key, request_hash, status, response, order_id)
			SELECT customer_id, $12, $13, $14, $15, id FROM ord
			ON CONFLICT (customer_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, status = EXCLUDED.status,
				response = EXCLUDED.response, order_id = EXCLUDED.order_id, created_at = now()
		)`
	}
	insertEvent, eventArgs := evt.SQL(len(args)+1, "")
	args = append(args, eventArgs...)
	// The history entries take their orders' rows from ord, so that they reference rows
	// the statement wrote, and their causes from the array, at the order's position.
	return fmt.Sprintf(`
		WITH ord AS (
			INSERT INTO orders (id, customer_id, customer_email, currency, items, total_cents,
				payment_method, status, correlation_id, created_at, updated_at)
			SELECT o.*, o.created_at FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::bigint[],
				$7::text[], $8::text[], $9::text[], $10::timestamptz[])
				AS o(id, customer_id, customer_email, currency, items, total_cents, payment_method, status, correlation_id, created_at)
			RETURNING id, customer_id, status, created_at
		),
		hist AS (
			INSERT INTO order_history (order_id, from_status, to_status, cause_event_id, reason, at)
			SELECT id, NULL, status, ($11::text[])[array_position($1::uuid[], id)], NULL, created_at FROM ord
		),
		evt AS (%s)%s
		SELECT 1`, insertEvent, keySQL), args
}

// CreateOnce creates the order as Create does, at most once per idempotency key of its
// customer, with the key and the response to replay stored in the same transaction. A later request with the
// same key and the same requestHash gets that Replay; with another hash,
// order.ErrIdempotencyKeyReused; while the first is still being processed,
// order.ErrIdempotencyKeyInFlight.
func (s *Store) CreateOnce(ctx context.Context, key, requestHash string, o order.Order, evs []events.Envelope, status int, response []byte) (*order.Replay, error) {
	var replay *order.Replay
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var mine bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock(hashtextextended('idempotency:' || $1::text || ':' || $2::text, 0))`,
			o.CustomerID, key).Scan(&mine); err != nil {
			return err
		}
		if !mine {
			return order.ErrIdempotencyKeyInFlight
		}
		var hash string
		r := order.Replay{}
		err := tx.QueryRow(ctx, `
			SELECT request_hash, status, response, order_id::text FROM idempotency_keys
			WHERE customer_id = $1 AND key = $2 AND created_at > now() - $3::interval`, o.CustomerID, key, fmt.Sprintf("%d seconds", int(order.IdempotencyKeyTTL.Seconds()))).
			Scan(&hash, &r.Status, &r.Body, &r.OrderID)
		switch {
		case err == nil && hash != requestHash:
			return order.ErrIdempotencyKeyReused
		case err == nil:
			replay = &r
			return nil
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		sql, args := createStatement([]placed{{o, evs}}, &idempotency{key: key, requestHash: requestHash, status: status, response: response})
		_, err = tx.Exec(ctx, sql, args...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create order %s with idempotency key: %w", o.ID, err)
	}
	if replay == nil {
		s.placed.add(o)
	}
	return replay, nil
}

// PruneIdempotencyKeys deletes the keys past their time to live, a batch at a time
// (prune.Rows), and says how many.
func (s *Store) PruneIdempotencyKeys(ctx context.Context) (int64, error) {
	n, err := prune.Rows(ctx, s.pool, "idempotency_keys", "created_at < now() - $1::interval", "created_at",
		fmt.Sprintf("%d seconds", int(order.IdempotencyKeyTTL.Seconds())))
	if err != nil {
		return n, fmt.Errorf("prune idempotency keys: %w", err)
	}
	return n, nil
}

const orderColumns = `id::text, customer_id::text, customer_email, currency, items, total_cents, payment_method,
	status, coalesce(failure_reason, ''), correlation_id, created_at, updated_at, version`

const selectOrder = `SELECT ` + orderColumns + ` FROM orders WHERE id = $1`

func scanOrder(row pgx.Row) (order.Order, error) {
	var o order.Order
	var ij []byte
	err := row.Scan(&o.ID, &o.CustomerID, &o.CustomerEmail, &o.Currency, &ij, &o.TotalCents,
		&o.PaymentMethod, &o.Status, &o.FailureReason, &o.CorrelationID, &o.CreatedAt, &o.UpdatedAt, &o.Version)
	if errors.Is(err, pgx.ErrNoRows) {
		return order.Order{}, order.ErrNotFound
	}
	if err != nil {
		return order.Order{}, err
	}
	var items []itemJSON
	if err := json.Unmarshal(ij, &items); err != nil {
		return order.Order{}, fmt.Errorf("order %s items: %w", o.ID, err)
	}
	o.Items = make([]order.Item, len(items))
	for i, it := range items {
		o.Items[i] = order.Item(it)
	}
	o.CreatedAt, o.UpdatedAt = o.CreatedAt.UTC(), o.UpdatedAt.UTC()
	return o, nil
}

// Get returns the order with id, or order.ErrNotFound. id must be a UUID.
func (s *Store) Get(ctx context.Context, id string) (order.Order, error) {
	o, err := scanOrder(s.pool.QueryRow(ctx, selectOrder, id))
	if err != nil && !errors.Is(err, order.ErrNotFound) {
		return order.Order{}, fmt.Errorf("get order %s: %w", id, err)
	}
	return o, err
}

// Transition moves order id to status to inside tx, recording the event that caused it.
// It returns order.ErrNotFound or order.ErrInvalidTransition (wrapped) when it does not
// apply; tx is then unchanged.
func (s *Store) Transition(ctx context.Context, tx pgx.Tx, id string, to order.Status, reason, causeEventID string, now time.Time) (order.Order, error) {
	out, err := s.TransitionAll(ctx, tx, []Change{{OrderID: id, To: to, Reason: reason, CauseEventID: causeEventID, At: now}})
	if err != nil {
		return order.Order{}, err
	}
	return out[0].Order, out[0].Err
}

// Change asks for an order to move to To because of the event CauseEventID.
type Change struct {
	OrderID      string
	To           order.Status
	Reason       string
	CauseEventID string
	At           time.Time
}

// Outcome is what became of a Change: the order as it now stands, and Err,
// order.ErrNotFound or order.ErrInvalidTransition (wrapped), when it did not apply.
type Outcome struct {
	Order order.Order
	Err   error
}

// TransitionAll applies changes inside tx, with their history entries, and returns their
// outcomes in the same order. The common case, pending orders moving, is one statement
// for the whole batch: the update only applies to a pending order (the one status that
// moves, as order.Transition says), and the history entries ride along. The orders it did
// not move are read, in one more statement, to say why. Give each order one change.
func (s *Store) TransitionAll(ctx context.Context, tx pgx.Tx, changes []Change) ([]Outcome, error) {
	out := make([]Outcome, len(changes))
	var ids, tos, reasons, causes []string
	var ats []time.Time
	for i, c := range changes {
		next := order.Order{Status: order.PendingPayment}
		if out[i].Err = next.Transition(c.To, c.Reason, c.At); out[i].Err != nil {
			continue // an unknown target status
		}
		ids, tos, reasons = append(ids, c.OrderID), append(tos, string(next.Status)), append(reasons, next.FailureReason)
		causes, ats = append(causes, c.CauseEventID), append(ats, next.UpdatedAt)
	}
	// The orders are found by id = ANY(ids), an index scan whatever the planner thinks of
	// the table, and each takes its values from the arrays at its id's position: no join
	// to plan. (Joined with the unnested arrays instead, a fresh table without statistics
	// got a plan comparing every order with every change, many times slower; CHANGELOG.md
	// has the figures.) The ids come through a scalar subquery and the status
	// is written in, so that PostgreSQL keeps one plan for every batch instead of planning
	// each afresh (docs/performance.md, "Plans made once").
	moved, err := ordersByID(tx.Query(ctx, `
		WITH upd AS (`+decide(1, "", "o.*")+`)`+DecidedHistory("upd")+`
		SELECT `+orderColumns+` FROM upd`, ids, tos, reasons, causes, ats))
	if err != nil {
		return nil, fmt.Errorf("update orders: %w", err)
	}
	var stuck []string
	for i, c := range changes {
		if o, ok := moved[c.OrderID]; ok && out[i].Err == nil {
			out[i].Order = o
		} else if out[i].Err == nil {
			stuck = append(stuck, c.OrderID)
		}
	}
	if len(stuck) == 0 {
		return out, nil
	}
	found, err := ordersByID(tx.Query(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = ANY($1::uuid[])`, stuck))
	if err != nil {
		return nil, fmt.Errorf("read orders: %w", err)
	}
	for i, c := range changes {
		if _, ok := moved[c.OrderID]; ok || out[i].Err != nil {
			continue
		}
		o, ok := found[c.OrderID]
		if !ok {
			out[i].Err = order.ErrNotFound
			continue
		}
		out[i].Order = o // as it stands: Transition changes nothing when it fails
		if out[i].Err = out[i].Order.Transition(c.To, c.Reason, c.At); out[i].Err == nil {
			return nil, fmt.Errorf("update order %s: pending, yet not updated", c.OrderID)
		}
	}
	return out, nil
}

// decide is the UPDATE that moves pending orders, each found by id = ANY and taking its
// values at its id's position in the arrays of its parameters, numbered from first on:
// ids, statuses, failure reasons, the events that caused the changes, and their times.
// It returns the cause of each change as cause, then returning; only where guard, if it
// is not empty, holds too.
func decide(first int, guard, returning string) string {
	at := func(param int, typ string) string {
		return fmt.Sprintf("($%d::%s[])[array_position($%d::uuid[], o.id)]", first+param, typ, first)
	}
	if guard != "" {
		guard = " AND " + guard
	}
	return `
		UPDATE orders o SET status = ` + at(1, "text") + `,
			failure_reason = nullif(` + at(2, "text") + `, ''),
			updated_at = ` + at(4, "timestamptz") + `,
			version = o.version + 1
		WHERE o.id = ANY(((SELECT $` + fmt.Sprint(first) + `::uuid[]))::uuid[]) AND o.status = '` + string(order.PendingPayment) + `'` + guard + `
		RETURNING ` + at(3, "text") + ` AS cause, ` + returning
}

// DecidedHistory is the WITH clause that writes the history entry of each order decide
// moved (TransitionAll's, DecidedStatement's: consumer.AlsoWrite), from the relation
// moved that holds what it returned.
func DecidedHistory(moved string) string {
	return `,
		hist AS (
			INSERT INTO order_history (order_id, from_status, to_status, cause_event_id, reason, at)
			SELECT id, '` + string(order.PendingPayment) + `', status, cause, failure_reason, updated_at FROM ` + moved + `
		)`
}

// Placed returns the order o as this store wrote it, if it placed it a short while ago
// and has not seen it change since: a pending order's row does not change until it
// leaves PENDING_PAYMENT (order.Transition), so while it is pending the row is o. A
// store remembers at most the maxRemembered orders it placed last; another instance's
// orders, and those placed before a restart, it does not know.
func (s *Store) Placed(id string) (order.Order, bool) { return s.placed.get(id) }

// Decided is a pending order's payment decision: the order as it stands once the decision
// applies (order.Transition), and the event that caused it.
type Decided struct {
	Order        order.Order
	CauseEventID string
}

// DecidedStatement is the statement that moves the pending orders ds to their decided
// status (the statement of consumer.NewStatementSet), its parameters numbered from first
// on, and their values. It returns the tag of each order it moved, its index in ds, with
// what DecidedHistory needs. With fresh, the name of a relation of the caller's statement
// with an int column tag, it moves only the orders whose index fresh holds: an order
// given twice goes by its first, as the update moves a row once. (A decision whose event
// the inbox had seen was applied then, and its order is pending no more: a later decision
// beside it in the batch could not move it either.) It moves an order only if it is still
// pending: one cancelled meanwhile stays CANCELLED.
func DecidedStatement(ds []Decided, first int, fresh string) (string, []any) {
	n := len(ds)
	ids, tos, reasons, causes, ats, tags := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]time.Time, n), make([]int32, n)
	for i, d := range ds {
		o := d.Order
		ids[i], tos[i], reasons[i], causes[i], ats[i], tags[i] = o.ID, string(o.Status), o.FailureReason, d.CauseEventID, o.UpdatedAt, int32(i)
	}
	tag := fmt.Sprintf("($%d::int[])[array_position($%d::uuid[], o.id)]", first+5, first)
	guard := ""
	if fresh != "" {
		guard = tag + " IN (SELECT tag FROM " + fresh + ")"
	}
	return decide(first, guard, tag+" AS tag, o.id, o.status, o.failure_reason, o.updated_at"), []any{ids, tos, reasons, causes, ats, tags}
}

// Forget tells the store that the order id changed: it stops remembering it as placed.
func (s *Store) Forget(id string) { s.placed.forget(id) }

// ordersByID reads rows of orderColumns.
func ordersByID(rows pgx.Rows, err error) (map[string]order.Order, error) {
	if err != nil {
		return nil, err
	}
	os, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (order.Order, error) { return scanOrder(r) })
	byID := make(map[string]order.Order, len(os))
	for _, o := range os {
		byID[o.ID] = o
	}
	return byID, err
}

// Change moves order id, if v sees it, to what change makes of it, and stores the events
// change returns with it (the first's id the history entry's cause), in one transaction
// that holds the order's row meanwhile. An error from change (order.ErrInvalidTransition,
// say) is returned as it is, and nothing changes; unknown or not v's, order.ErrNotFound.
func (s *Store) Change(ctx context.Context, id string, v order.Viewer, change func(order.Order) (order.Order, []events.Envelope, error)) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		o, err := scanOrder(tx.QueryRow(ctx, selectOrder+` FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if !v.Sees(o) {
			return order.ErrNotFound
		}
		from := o.Status
		o, evs, err := change(o)
		if err != nil {
			return err
		}
		return update(ctx, tx, o, from, evs)
	})
	if err == nil {
		s.placed.forget(id)
	}
	if err != nil && !errors.Is(err, order.ErrNotFound) && !errors.Is(err, order.ErrInvalidTransition) {
		return fmt.Errorf("change order %s: %w", id, err)
	}
	return err
}

// update writes o's new status and version, its history entry and its events, in one
// statement: one round trip.
func update(ctx context.Context, tx pgx.Tx, o order.Order, from order.Status, evs []events.Envelope) error {
	var evt outbox.Rows
	for _, env := range evs {
		evt.Add(0, env)
	}
	insertEvent, eventArgs := evt.SQL(8, "upd")
	_, err := tx.Exec(ctx, `
		WITH upd AS (
			UPDATE orders SET status = $2, failure_reason = nullif($3, ''), updated_at = $4, version = $7 WHERE id = $1 RETURNING id, 0 AS tag
		),
		hist AS (
			INSERT INTO order_history (order_id, from_status, to_status, cause_event_id, reason, at)
			SELECT id, $5, $2, $6, nullif($3, ''), $4 FROM upd
		),
		evt AS (`+insertEvent+`)
		SELECT 1`,
		append([]any{o.ID, o.Status, o.FailureReason, o.UpdatedAt, from, evs[0].ID, o.Version}, eventArgs...)...)
	if err != nil {
		return fmt.Errorf("update order %s: %w", o.ID, err)
	}
	return nil
}

// List returns a page of orders, newest first. Order ids are UUIDv7, so they sort by
// creation time and the page after a given id stays the same however many orders arrive.
func (s *Store) List(ctx context.Context, f order.Filter) ([]order.Order, error) {
	rows, _ := s.pool.Query(ctx, `
		SELECT `+orderColumns+`
		FROM orders
		WHERE ($1 = '' OR customer_id = nullif($1, '')::uuid)
		  AND ($2 = '' OR status = $2)
		  AND ($3 = '' OR id < nullif($3, '')::uuid)
		  AND ($5::timestamptz IS NULL OR created_at < $5)
		ORDER BY id DESC
		LIMIT $4`, f.CustomerID, string(f.Status), f.Before, f.Limit, placedBefore(f.PlacedBefore))
	defer rows.Close()
	var out []order.Order
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	return out, nil
}

// History returns the order's status changes, oldest first.
func (s *Store) History(ctx context.Context, id string) ([]order.Change, error) {
	rows, _ := s.pool.Query(ctx, `
		SELECT coalesce(from_status, ''), to_status, cause_event_id, coalesce(reason, ''), at
		FROM order_history WHERE order_id = $1 ORDER BY id`, id)
	changes, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (c order.Change, err error) {
		err = r.Scan(&c.From, &c.To, &c.CauseEventID, &c.Reason, &c.At)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("order %s history: %w", id, err)
	}
	return changes, nil
}

// placedBefore is t as a query parameter: NULL when zero, so the filter keeps every order.
func placedBefore(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
