package platform

import (
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderflow/devstack/testenv"
)

// The pool's connections carry the keepalives and the user timeout that notice a silent
// server; the kernel's defaults take hours.
func TestPoolConnectionsNoticeASilentServer(t *testing.T) {
	cfg, err := pgxpool.ParseConfig(testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	guardSilence(cfg)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	conn, err := pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	raw, err := conn.Conn().PgConn().Conn().(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for name, opt := range map[string][2]int{
		"SO_KEEPALIVE": {syscall.SOL_SOCKET, syscall.SO_KEEPALIVE}, "TCP_KEEPIDLE": {syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE},
		"TCP_KEEPINTVL": {syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL}, "TCP_KEEPCNT": {syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT},
		"TCP_USER_TIMEOUT": {syscall.IPPROTO_TCP, tcpUserTimeout},
	} {
		_ = raw.Control(func(fd uintptr) { got[name], err = syscall.GetsockoptInt(int(fd), opt[0], opt[1]) })
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	want := map[string]int{"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3, "TCP_USER_TIMEOUT": 30000}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %d, want %d", name, got[name], v)
		}
	}
}

// A connection attempt to a server that accepts and then says nothing fails after the
// connect timeout; without one it waits for ever.
func TestAConnectToASilentServerGivesUp(t *testing.T) {
	through, proxy := testenv.ProxiedPool(t, testenv.Pool(t))
	proxy.Blackhole()
	cfg := through.Config()
	guardSilence(cfg)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*connectTimeout)
	defer cancel()
	start := time.Now()
	_, err = pool.Acquire(ctx)
	took := time.Since(start)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("a connect to a silent server: %v after %s, want it to give up after %s", err, took, connectTimeout)
	}
	t.Logf("gave up after %s: %v", took.Round(100*time.Millisecond), err)
}

// A DATABASE_URL naming the server's Unix socket (host=/run/postgresql, as for a server
// on the same machine) connects: the user timeout is a TCP option, and setting it on a
// Unix socket failed every connection ("operation not supported").
func TestAPoolThroughTheServersUnixSocketConnects(t *testing.T) {
	ctx := context.Background()
	tcp := testenv.Pool(t)
	var dirs, port string
	if err := tcp.QueryRow(ctx, `SELECT current_setting('unix_socket_directories'), current_setting('port')`).Scan(&dirs, &port); err != nil {
		t.Fatal(err)
	}
	dir, _, _ := strings.Cut(dirs, ",")
	if dir == "" {
		t.Skip("the server listens on no Unix socket")
	}
	cfg := tcp.Config()
	cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Fallbacks = strings.TrimSpace(dir), 0, nil
	if _, err := fmt.Sscan(port, &cfg.ConnConfig.Port); err != nil {
		t.Fatal(err)
	}
	guardSilence(cfg)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var one int
	if err := pool.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil {
		t.Fatalf("through the socket in %s: %v", dir, err)
	}
}
