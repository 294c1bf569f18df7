// Package ports hands out TCP ports on 127.0.0.1 for the parts of a stack (a broker,
// PostgreSQL, the services) that are chosen before they listen.
//
// The ports come from below the kernel's ephemeral range, from which the kernel gives
// every connection its local port and every listener on port 0 its port. A port of that
// range, chosen and let go to be listened on a moment later, may be taken meanwhile by a
// connection of another part starting (all the likelier with several starting side by
// side), and the part that was to listen on it fails to start. Ports below the range are
// taken only by asking for them.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Free returns a port on 127.0.0.1 that nothing listens on right now, given out once per
// process.
func Free() (int, error) {
	given.Lock()
	defer given.Unlock()
	from, to := fixed()
	for range 1000 {
		port := from + rand.IntN(to-from)
		if given.ports[port] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // in use
		}
		ln.Close()
		given.ports[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("no free port in %d–%d", from, to-1)
}

// fixed is the range Free gives out from: 20000 up to the start of the kernel's
// ephemeral range, or, when that starts too low to leave room, the 5000 ports above its end.
func fixed() (from, to int) {
	lo, hi := ephemeral()
	if lo >= 21000 {
		return 20000, lo
	}
	return hi + 1, min(hi+5001, 65536)
}

// ephemeral is the kernel's ephemeral range, net.ipv4.ip_local_port_range (Linux's
// default, 32768–60999, when it cannot be read).
func ephemeral() (lo, hi int) {
	lo, hi = 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			l, err1 := strconv.Atoi(f[0])
			h, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && l <= h {
				lo, hi = l, h
			}
		}
	}
	return lo, hi
}

// given are the ports Free has handed out.
var given = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}
