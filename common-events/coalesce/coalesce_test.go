package coalesce_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderflow/common-events/coalesce"
)

// double answers each request with twice its value, after a pause, and records each
// batch it ran.
type double struct {
	pause   time.Duration
	mu      sync.Mutex
	batches [][]int
}

func (d *double) run(ctx context.Context, reqs []int) ([]int, error) {
	d.mu.Lock()
	d.batches = append(d.batches, append([]int(nil), reqs...))
	d.mu.Unlock()
	time.Sleep(d.pause)
	out := make([]int, len(reqs))
	for i, r := range reqs {
		out[i] = 2 * r
	}
	return out, nil
}

func TestConcurrentCallsShareBatches(t *testing.T) {
	d := &double{pause: 5 * time.Millisecond}
	b := coalesce.New(d.run, coalesce.Options{Max: 16})
	const callers = 200
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Go(func() {
			got, err := b.Do(context.Background(), i)
			if err != nil || got != 2*i {
				errs <- fmt.Errorf("Do(%d) = %d, %v; want %d", i, got, err, 2*i)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seen := map[int]int{}
	for _, batch := range d.batches {
		if len(batch) > 16 {
			t.Errorf("a batch of %d requests; Max is 16", len(batch))
		}
		for _, r := range batch {
			seen[r]++
		}
	}
	for i := range callers {
		if seen[i] != 1 {
			t.Errorf("request %d ran %d times", i, seen[i])
		}
	}
	if len(d.batches) >= callers/4 {
		t.Errorf("%d callers at once ran %d batches: they did not share", callers, len(d.batches))
	}
}

func TestALoneCallRunsAtOnce(t *testing.T) {
	d := &double{}
	b := coalesce.New(d.run, coalesce.Options{})
	for i := range 3 {
		if got, err := b.Do(context.Background(), i); err != nil || got != 2*i {
			t.Fatalf("Do(%d) = %d, %v", i, got, err)
		}
	}
	if len(d.batches) != 3 {
		t.Fatalf("3 calls one after another ran %d batches, want 3 of one: %v", len(d.batches), d.batches)
	}
}

func TestABatchErrorReachesEveryCallerOfIt(t *testing.T) {
	release := make(chan struct{})
	var batches atomic.Int32
	boom := errors.New("boom")
	b := coalesce.New(func(ctx context.Context, reqs []int) ([]int, error) {
		if batches.Add(1) == 1 {
			<-release // the first batch holds the turn while the others queue
			return []int{0}, nil
		}
		return nil, boom
	}, coalesce.Options{Flights: 1})
	first := make(chan error)
	go func() { _, err := b.Do(context.Background(), 0); first <- err }()
	waitFor(t, func() bool { return batches.Load() == 1 })
	errs := make(chan error, 5)
	for i := range 5 {
		go func() { _, err := b.Do(context.Background(), i+1); errs <- err }()
	}
	time.Sleep(20 * time.Millisecond) // the five are queued behind the first batch
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first: %v", err)
	}
	for range 5 {
		if err := <-errs; !errors.Is(err, boom) {
			t.Errorf("got %v, want the batch's error", err)
		}
	}
	if n := batches.Load(); n != 2 {
		t.Errorf("%d batches, want 2: the first, and the five together", n)
	}
}

// rowError is a statement's failure for one row, as pgx reports it.
type rowError string

func (e rowError) Error() string    { return "row: " + string(e) }
func (e rowError) SQLState() string { return string(e) }

func TestABatchFailingForOneRequestIsRunOneByOne(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	b := coalesce.New(func(ctx context.Context, reqs []int) ([]int, error) {
		if calls.Add(1) == 1 {
			<-release
		}
		for _, r := range reqs {
			if r == 3 {
				return nil, fmt.Errorf("insert: %w", rowError("23505"))
			}
		}
		return reqs, nil
	}, coalesce.Options{Flights: 1, Alone: coalesce.ByRow})
	first := make(chan error)
	go func() { _, err := b.Do(context.Background(), 0); first <- err }()
	waitFor(t, func() bool { return calls.Load() == 1 })
	type result struct {
		req, got int
		err      error
	}
	results := make(chan result, 5)
	for i := range 5 {
		go func() { got, err := b.Do(context.Background(), i+1); results <- result{i + 1, got, err} }()
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	<-first
	for range 5 {
		r := <-results
		switch {
		case r.req == 3 && !coalesce.ByRow(r.err):
			t.Errorf("the request at fault: %v; want its row's error", r.err)
		case r.req != 3 && (r.err != nil || r.got != r.req):
			t.Errorf("request %d, batched with the one at fault: %d, %v; want its own answer", r.req, r.got, r.err)
		}
	}
	if coalesce.ByRow(errors.New("connection refused")) || coalesce.ByRow(rowError("57P01")) {
		t.Error("ByRow takes a database's failure for a row's")
	}
}

func TestACallGivenUpWhileQueuedIsLeftOut(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var ran []int
	b := coalesce.New(func(ctx context.Context, reqs []int) ([]int, error) {
		mu.Lock()
		ran = append(ran, reqs...)
		mu.Unlock()
		if reqs[0] == 0 {
			<-release
		}
		return reqs, nil
	}, coalesce.Options{Flights: 1})
	first := make(chan error)
	go func() { _, err := b.Do(context.Background(), 0); first <- err }()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(ran) == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := b.Do(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call whose context ended while queued: %v", err)
	}
	later := make(chan int)
	go func() { got, _ := b.Do(context.Background(), 2); later <- got }()
	close(release)
	<-first
	if got := <-later; got != 2 {
		t.Fatalf("the call after it: %d", got)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range ran {
		if r == 1 {
			t.Fatalf("the call given up ran anyway: %v", ran)
		}
	}
}

func TestACallInABatchWaitsForItsEnd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	b := coalesce.New(func(bctx context.Context, reqs []int) ([]int, error) {
		cancel() // the caller gives up while its batch runs
		time.Sleep(10 * time.Millisecond)
		return reqs, bctx.Err()
	}, coalesce.Options{})
	got, err := b.Do(ctx, 7)
	if err != nil || got != 7 {
		t.Fatalf("Do = %d, %v; want the batch's answer, 7, whatever became of the caller's context", got, err)
	}
}

// A batch ends by its callers' latest deadline, not the Batcher's Timeout: a caller with
// a short deadline hears back by it even when the statement hangs.
func TestABatchEndsByItsCallersDeadline(t *testing.T) {
	b := coalesce.New(func(ctx context.Context, reqs []int) ([]int, error) {
		<-ctx.Done() // a database gone silent
		return nil, ctx.Err()
	}, coalesce.Options{Timeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := b.Do(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Do = %v; want the deadline's error", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("a caller with a 50 ms deadline heard back after %v", took)
	}
}

func TestAPanickingBatchFailsItsCallersAndTheOthersGoOn(t *testing.T) {
	b := coalesce.New(func(ctx context.Context, reqs []int) ([]int, error) {
		if reqs[0] < 0 {
			panic("negative")
		}
		return reqs, nil
	}, coalesce.Options{})
	if _, err := b.Do(context.Background(), -1); err == nil {
		t.Fatal("a panicking batch answered")
	}
	if got, err := b.Do(context.Background(), 3); err != nil || got != 3 {
		t.Fatalf("the call after a panicking batch: %d, %v", got, err)
	}
}

// With Flights, a call starts while another batch is in flight.
func TestFlightsRunBatchesAtOnce(t *testing.T) {
	var inFlight, most atomic.Int32
	b := coalesce.New(func(ctx context.Context, reqs []int) ([]int, error) {
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(5 * time.Millisecond)
		inFlight.Add(-1)
		return reqs, nil
	}, coalesce.Options{Flights: 3, Max: 2})
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Go(func() {
			if got, err := b.Do(context.Background(), i); err != nil || got != i {
				t.Errorf("Do(%d) = %d, %v", i, got, err)
			}
		})
	}
	wg.Wait()
	if m := most.Load(); m != 3 {
		t.Errorf("at most %d batches ran at once; want Flights, 3", m)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}

// With a Linger, calls that come one after another within it share one batch, and Max of
// them end the linger early; the next call after the batch, a new quiet spell, lingers
// again. Without one, each of the same calls runs in a batch of its own.
func TestALingerGathersTheCallsThatComeWithinIt(t *testing.T) {
	spaced := func(b *coalesce.Batcher[int, int], from, n int) {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { _, _ = b.Do(context.Background(), from+i) })
			time.Sleep(20 * time.Millisecond)
		}
		wg.Wait()
	}
	for _, tc := range []struct {
		linger time.Duration
		want   string
	}{
		{0, "[[0] [1] [2] [3] [4] [5] [6]]"},
		{time.Second, "[[0 1 2 3] [4 5 6]]"},
	} {
		d := &double{}
		b := coalesce.New(d.run, coalesce.Options{Max: 4, Linger: tc.linger})
		start := time.Now()
		spaced(b, 0, 4) // Max within the linger: it ends early
		if tc.linger > 0 && time.Since(start) > tc.linger/2 {
			t.Errorf("Max calls waited %s; the linger ends when they are there", time.Since(start))
		}
		spaced(b, 4, 3) // the linger runs its course
		if got := fmt.Sprint(d.batches); got != tc.want {
			t.Errorf("with Linger %s: batches %s, want %s", tc.linger, got, tc.want)
		}
	}
}
