package ports

import "testing"

// Free's ports are never ones the kernel hands out unasked (its ephemeral range, from
// which connections and listeners on port 0 get theirs), and never the same one twice.
func TestFreeIsOutsideTheEphemeralRange(t *testing.T) {
	lo, hi := ephemeral()
	seen := map[int]bool{}
	for range 200 {
		p, err := Free()
		if err != nil {
			t.Fatal(err)
		}
		if p >= lo && p <= hi {
			t.Fatalf("port %d is in the kernel's ephemeral range %d–%d", p, lo, hi)
		}
		if seen[p] {
			t.Fatalf("port %d given twice", p)
		}
		seen[p] = true
	}
}
