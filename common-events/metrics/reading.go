package metrics

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultInterval is how often a Registry's readings are taken when Interval is 0.
const DefaultInterval = 5 * time.Second

// readTimeout bounds one reading that honours its context (a query), well under the
// interval, unless the Reading says otherwise: a slow database delays the values, never a
// scrape.
const readTimeout = 2 * time.Second

// epoch is what a reading's next time is counted from: a monotonic clock, which a step of
// the wall clock does not move.
var epoch = time.Now()

// A Reading is series that cost a query or a broker round trip to read. Registered with
// Background, it is read by the Registry's Run every Interval, and a scrape serves what
// the last reading found: a scrape never waits for the database or the broker, and a
// flood of scrapes costs them nothing.
type Reading struct {
	// Name tells this reading apart in orderflow_metrics_reading_last_success_timestamp_seconds.
	Name  string
	Descs []*prometheus.Desc // every series Read returns
	// Read reads the series. When it fails, the last good values stay served, unless it
	// returns values along with its error: those are served instead (NaN: not known now).
	Read func(ctx context.Context) ([]prometheus.Metric, error)
	// Unread is served until the first reading succeeds, so that every series is there
	// from the first scrape on: NaN (see NaN), not a guess.
	Unread []prometheus.Metric
	// Timeout bounds one Read; 0: readTimeout.
	Timeout time.Duration
	// Spacing, if set, is how long after a Read started the next may start, asked once
	// it ended (whatever its outcome), when that is longer than the Interval: for a
	// reading whose cost grows with what it reads (Tally).
	Spacing func() time.Duration
}

// NaN returns a gauge of desc at NaN: a value not read yet, or not readable now.
func NaN(desc *prometheus.Desc, labels ...string) prometheus.Metric {
	return Const(desc, prometheus.GaugeValue, math.NaN(), labels...)
}

var stampDesc = prometheus.NewDesc(Namespace+"_metrics_reading_last_success_timestamp_seconds",
	"When each background reading of the metrics last succeeded, as a Unix time; 0 before the first. "+
		"The series a reading gives are as of then: a reading that fails keeps serving its last values "+
		"(the consumer lag: NaN) and this stops moving.",
	[]string{"reading"}, nil)

// Background registers rd with reg, which must come from a Registry's Registerer: that
// Registry's Run reads it.
func Background(reg prometheus.Registerer, rd Reading) error {
	rr, ok := reg.(registerer)
	if !ok {
		return fmt.Errorf("metrics: reading %s: %T is not a Registry's Registerer, nothing would read it", rd.Name, reg)
	}
	if rd.Name == "" || len(rd.Descs) == 0 || rd.Read == nil {
		return errors.New("metrics: a reading needs a name, its descriptions and a Read")
	}
	b := &reading{Reading: rd, last: rd.Unread, tried: make(chan struct{})}
	return rr.r.readings.add(rr, b)
}

// reading is a Reading with what it last read; it collects that.
type reading struct {
	Reading
	busy  atomic.Bool   // a read in flight: the next tick does not start another
	due   atomic.Int64  // when the next read may start, in nanoseconds since epoch (Spacing)
	tried chan struct{} // closed once the first read ended, whatever its outcome
	once  sync.Once

	mu   sync.Mutex
	last []prometheus.Metric
	at   time.Time // the last success
}

func (b *reading) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range b.Descs {
		ch <- d
	}
}

func (b *reading) Collect(ch chan<- prometheus.Metric) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.last {
		ch <- m
	}
}

// read takes one reading unless ctx ended meanwhile: a reading cut short by shutdown
// says nothing about what it reads.
func (b *reading) read(ctx context.Context) {
	defer b.once.Do(func() { close(b.tried) })
	timeout := b.Timeout
	if timeout <= 0 {
		timeout = readTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Since(epoch)
	ms, err := b.Read(rctx)
	if b.Spacing != nil {
		b.due.Store(int64(start + b.Spacing()))
	}
	if ctx.Err() != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case err == nil:
		b.last, b.at = ms, time.Now()
	case ms != nil:
		b.last = ms
	}
}

func (b *reading) stamp() prometheus.Metric {
	b.mu.Lock()
	defer b.mu.Unlock()
	v := 0.0
	if !b.at.IsZero() {
		v = float64(b.at.UnixNano()) / 1e9
	}
	return Const(stampDesc, prometheus.GaugeValue, v, b.Name)
}

// readings are a Registry's Readings.
type readings struct {
	mu   sync.Mutex
	list []*reading
}

func (rs *readings) add(reg prometheus.Registerer, b *reading) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if slices.ContainsFunc(rs.list, func(o *reading) bool { return o.Name == b.Name }) {
		return fmt.Errorf("metrics: a reading named %s is registered already", b.Name)
	}
	if err := reg.Register(b); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	rs.list = append(rs.list, b)
	return nil
}

func (rs *readings) all() []*reading {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return slices.Clone(rs.list)
}

// Describe and Collect serve each reading's timestamp.
func (rs *readings) Describe(ch chan<- *prometheus.Desc) { ch <- stampDesc }

func (rs *readings) Collect(ch chan<- prometheus.Metric) {
	for _, b := range rs.all() {
		ch <- b.stamp()
	}
}

// Run takes every reading at once and then every Interval until ctx is done, each in a
// goroutine of its own so a slow one (the broker's offsets) holds back no other, and
// never two of the same at a time, nor one sooner than its Spacing says. It returns once
// the readings in flight have ended: a query ends with ctx; a reading through the broker
// client, which takes no context, within the client's own timeouts. A reading registered
// later is taken at the next tick.
func (r *Registry) Run(ctx context.Context) error {
	interval := r.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for _, b := range r.readings.all() {
			if int64(time.Since(epoch)) >= b.due.Load() && b.busy.CompareAndSwap(false, true) {
				wg.Go(func() {
					defer b.busy.Store(false)
					b.read(ctx)
				})
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Wait returns once every reading registered so far has been taken once (successfully
// or not) by Run, or when ctx is done: a service waits for it, bounded, before serving.
func (r *Registry) Wait(ctx context.Context) {
	for _, b := range r.readings.all() {
		select {
		case <-b.tried:
		case <-ctx.Done():
			return
		}
	}
}
