package testenv

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Proxy is a TCP proxy in front of a dependency (PostgreSQL, a broker) that a test cuts,
// blackholes and restores, while the dependency itself goes on for the rest of the test.
// Cut is a partition that announces itself, or a restart: connections reset, new ones
// refused. Blackhole is one that does not: packets vanish, and only timeouts notice.
type Proxy struct {
	Addr   string // host:port the service connects to
	target string
	t      testing.TB

	mu    sync.Mutex
	ln    net.Listener
	holed bool                      // new connections are accepted and get nothing
	conns map[net.Conn]*atomic.Bool // each end of each connection, with whether it is silent
	wg    sync.WaitGroup
}

// NewProxy forwards a port of its own on 127.0.0.1 to target until the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p := &Proxy{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t))), target: target, t: t, conns: map[net.Conn]*atomic.Bool{}}
	p.Restore()
	t.Cleanup(func() { p.Cut(); p.wg.Wait() })
	return p
}

// Cut closes the proxy's port and every connection through it.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
	p.holed = false
}

// Blackhole silences the dependency without closing anything: what is sent on the
// connections open through the proxy is dropped and nothing comes back, and an end that
// closes is not told to the other; new connections are accepted, and get nothing either. Restore ends it for new connections; the silent
// ones stay silent until their client closes them, as a connection whose peer's session
// was lost meanwhile would.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holed = true
	for _, silent := range p.conns {
		silent.Store(true)
	}
}

// Restore opens the port again, and forwards new connections again after a Blackhole.
func (p *Proxy) Restore() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holed = false
	if p.ln != nil {
		return
	}
	ln, err := net.Listen("tcp", p.Addr)
	if err != nil {
		p.t.Fatalf("testenv: proxy: %v", err)
	}
	p.ln = ln
	p.wg.Go(func() { p.accept(ln) })
}

func (p *Proxy) accept(ln net.Listener) {
	for {
		in, err := ln.Accept()
		if err != nil {
			return // Cut
		}
		p.mu.Lock()
		holed := p.holed
		p.mu.Unlock()
		if holed { // accepted, then nothing
			silent := &atomic.Bool{}
			silent.Store(true)
			if !p.track(ln, silent, in) {
				return
			}
			p.wg.Go(func() { p.pipe(silent, nil, in) })
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		silent := &atomic.Bool{}
		if !p.track(ln, silent, in, out) {
			return
		}
		p.wg.Go(func() { p.pipe(silent, in, out) })
		p.wg.Go(func() { p.pipe(silent, out, in) })
	}
}

// track remembers a connection's ends, unless ln was cut meanwhile.
func (p *Proxy) track(ln net.Listener, silent *atomic.Bool, ends ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != ln {
		for _, c := range ends {
			_ = c.Close()
		}
		return false
	}
	for _, c := range ends {
		p.conns[c] = silent
	}
	return true
}

// pipe copies src to dst (none: drops it) until either closes; while silent, what src
// sends is read and dropped, and its closing is not passed on either: the other end
// stays open, as a peer whose FIN was lost does, until it closes itself or Cut.
func (p *Proxy) pipe(silent *atomic.Bool, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && dst != nil && !silent.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = src.Close()
	p.mu.Lock()
	delete(p.conns, src)
	if dst != nil && !silent.Load() {
		_ = dst.Close()
		delete(p.conns, dst)
	}
	p.mu.Unlock()
}

// ProxiedPool returns a pool to pool's database through a Proxy of its own, for a test
// to cut or blackhole. When the test ends the proxy is cut, then the pool closed: its
// silent connections would otherwise hold up dropping the test's database.
func ProxiedPool(t testing.TB, pool *pgxpool.Pool) (*pgxpool.Pool, *Proxy) {
	t.Helper()
	cfg := pool.Config()
	p := NewProxy(t, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))))
	host, port, _ := net.SplitHostPort(p.Addr)
	n, _ := strconv.Atoi(port)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = host, uint16(n)
	proxied, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("testenv: proxied pool: %v", err)
	}
	t.Cleanup(func() { p.Cut(); proxied.Close() })
	return proxied, p
}

// ProxiedKafka is a broker for a test that cuts or blackholes the way to it: a kfake
// that advertises a Proxy's address instead of its own, so that every connection a
// client makes to it, the bootstrap's and those it dials from the metadata, goes through
// the proxy. The broker's Addrs are the proxy's; it cannot be stopped and started again.
// The fault is in the path, not in the broker: with TEST_BROKER=kafka the test is
// skipped, the first pass having run it.
func ProxiedKafka(t testing.TB, opts ...kfake.Opt) (Broker, *Proxy) {
	t.Helper()
	checkBrokerKind(t)
	if BrokerKind() == ApacheKafka {
		t.Skip("testenv: a kfake behind a proxy, which the first pass ran; TEST_BROKER=kafka")
	}
	port := FreePort(t)
	p := NewProxy(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	advertised, err := net.ResolveTCPAddr("tcp", p.Addr)
	if err != nil {
		t.Fatalf("testenv: proxied kafka: %v", err)
	}
	listen := func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		if err != nil {
			return nil, err
		}
		return advertisedListener{ln, advertised}, nil
	}
	c, err := kfake.NewCluster(append([]kfake.Opt{
		kfake.NumBrokers(1), kfake.Ports(port), kfake.ListenFn(listen),
		kfake.GroupMinSessionTimeout(100 * time.Millisecond),
	}, opts...)...)
	if err != nil {
		t.Fatalf("testenv: proxied kafka: %v", err)
	}
	t.Cleanup(func() { p.Cut(); c.Close() })
	return Broker{Addrs: []string{p.Addr}, Cluster: c, t: t}, p
}

// advertisedListener is a listener that says it listens at addr: kfake advertises to its
// clients the address its listener gives.
type advertisedListener struct {
	net.Listener
	addr net.Addr
}

func (l advertisedListener) Addr() net.Addr { return l.addr }
