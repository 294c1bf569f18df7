package platform

import (
	"net"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Connections to PostgreSQL notice a server that goes silent (its packets dropped by a
// partition, nothing refused, nothing closed) rather than wait on it for the hours the
// kernel's defaults take. A connection attempt that gets no answer fails after
// connectTimeout (unless DATABASE_URL sets connect_timeout); an idle connection is probed
// after keepAliveIdle, and given up after keepAliveCount unanswered probes; data sent and
// not acknowledged for userTimeout ends the connection (TCP_USER_TIMEOUT, on Linux). The
// statements' own timeouts then fail fast on a connection known to be gone, and the pool
// dials a new one.
const (
	connectTimeout    = 10 * time.Second
	keepAliveIdle     = 10 * time.Second
	keepAliveInterval = 5 * time.Second
	keepAliveCount    = 3
	userTimeout       = 30 * time.Second
	// pingTimeout bounds the ping the pool sends a connection idle for a while before it
	// hands it out: one whose server went silent is dropped for another, instead of
	// holding up, for ever, a caller whose context has no deadline.
	pingTimeout = 5 * time.Second
)

// guardSilence sets cfg's connections to notice a silent server.
func guardSilence(cfg *pgxpool.Config) {
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	d := &net.Dialer{
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount},
		Control: func(network, _ string, c syscall.RawConn) error {
			if network == "unix" {
				return nil // a server on this machine, through its socket: no packets to lose
			}
			var err error
			if cerr := c.Control(func(fd uintptr) { err = setUserTimeout(fd, userTimeout) }); cerr != nil {
				return cerr
			}
			return err
		},
	}
	cfg.ConnConfig.DialFunc = d.DialContext
	if cfg.PingTimeout == 0 {
		cfg.PingTimeout = pingTimeout
	}
}
