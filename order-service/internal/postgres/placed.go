package postgres

import (
	"sync"

	"github.com/orderflow/order-service/internal/order"
)

// maxRemembered is the most orders a Store remembers having placed (Placed): orders are
// decided within seconds, so the orders of many seconds at the highest rates.
const maxRemembered = 1 << 14

// placedOrders remembers the orders a store placed until they change, at most limit: two
// generations of at most limit/2 each, the older dropped when the newer is full. An order
// that is never decided here (another instance consumed its outcome) is forgotten so.
type placedOrders struct {
	mu       sync.Mutex
	cur, old map[string]order.Order
	gen      int
}

func newPlacedOrders(limit int) *placedOrders {
	gen := max(limit/2, 1)
	return &placedOrders{cur: make(map[string]order.Order, gen), old: map[string]order.Order{}, gen: gen}
}

func (p *placedOrders) add(o order.Order) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.cur) >= p.gen {
		p.old, p.cur = p.cur, make(map[string]order.Order, p.gen)
	}
	p.cur[o.ID] = o
}

func (p *placedOrders) get(id string) (order.Order, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if o, ok := p.cur[id]; ok {
		return o, true
	}
	o, ok := p.old[id]
	return o, ok
}

func (p *placedOrders) forget(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.cur, id)
	delete(p.old, id)
}
