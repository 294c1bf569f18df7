package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
)

// LogBuffer collects log lines written from several goroutines (services in one test
// process, a stack's prefixed output).
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines returns the JSON log lines whose fields include every one of want.
func (b *LogBuffer) Lines(want map[string]string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		match := true
		for k, v := range want {
			if fmt.Sprint(m[k]) != v {
				match = false
			}
		}
		if match {
			out = append(out, m)
		}
	}
	return out
}
