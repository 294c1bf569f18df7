package testenv

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreePort's ports are never ones the kernel hands out unasked (its ephemeral range, from
// which connections and listeners on port 0 get theirs), and never the same one twice.
func TestFreePortIsOutsideTheEphemeralRange(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Skip("no /proc/sys/net/ipv4/ip_local_port_range:", err)
	}
	f := strings.Fields(string(b))
	lo, _ := strconv.Atoi(f[0])
	hi, _ := strconv.Atoi(f[1])
	seen := map[int]bool{}
	for range 200 {
		p := FreePort(t)
		if p >= lo && p <= hi {
			t.Fatalf("port %d is in the kernel's ephemeral range %d–%d", p, lo, hi)
		}
		if seen[p] {
			t.Fatalf("port %d given twice", p)
		}
		seen[p] = true
	}
}
