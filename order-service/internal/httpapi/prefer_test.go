package httpapi

import (
	"net/http"
	"testing"
	"time"
)

func TestPreferWait(t *testing.T) {
	tests := []struct {
		prefer []string
		want   time.Duration
		ok     bool
	}{
		{nil, 0, false},
		{[]string{"wait=10"}, 10 * time.Second, true},
		{[]string{"WAIT = 5"}, 5 * time.Second, true},
		{[]string{`wait="7"`}, 7 * time.Second, true},
		{[]string{"respond-async, wait=3"}, 3 * time.Second, true},
		{[]string{"handling=lenient", "wait=2;foo=bar"}, 2 * time.Second, true},
		{[]string{"wait=0"}, 0, true},
		{[]string{"wait=31"}, 30 * time.Second, true},
		{[]string{"wait=99999999999999999999"}, 0, false},
		{[]string{"wait=-1"}, 0, false},
		{[]string{"wait=1.5"}, 0, false},
		{[]string{"wait"}, 0, false},
		{[]string{"waiting=5"}, 0, false},
		{[]string{"return=minimal"}, 0, false},
	}
	for _, tt := range tests {
		h := http.Header{"Prefer": tt.prefer}
		if got, ok := preferWait(h); got != tt.want || ok != tt.ok {
			t.Errorf("Prefer %q = %v, %v; want %v, %v", tt.prefer, got, ok, tt.want, tt.ok)
		}
	}
}

// Whatever the Prefer header says, the wait is honoured only within 0 to MaxWait.
func FuzzPreferWait(f *testing.F) {
	for _, s := range []string{"wait=10", "respond-async, wait=3", `wait="7";x=y`, "wait=-1", "wait=", "=,;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, prefer string) {
		d, ok := preferWait(http.Header{"Prefer": {prefer}})
		if d < 0 || d > MaxWait*time.Second || (!ok && d != 0) {
			t.Errorf("Prefer %q = %v, %v", prefer, d, ok)
		}
	})
}
