package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/orderflow/common-events/platform"
)

// docs/configuration.md and the code agree both ways: every setting a service reads (its
// ReadConfig, its kafka-setup) has a row, and every row names settings some service reads.
func TestTheConfigurationPageListsEverySettingTheServicesRead(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	empty := func(string) string { return "" }
	read := map[string][]string{}
	for service, readConfig := range settingsRead {
		names, _ := readConfig(empty)
		_, setup, _ := platform.ReadSetup(identity(service), empty)
		for _, name := range append(names, setup...) {
			if !slices.Contains(read[name], service) {
				read[name] = append(read[name], service)
			}
		}
	}
	// The first column of the table's rows, each `NAME` in it; NAME_(TRACES_)X stands for
	// NAME_X and NAME_TRACES_X, and `_ARG` after `NAME` for NAME_ARG.
	documented := map[string]bool{}
	name := regexp.MustCompile("`([A-Z_][A-Z0-9_()]*)`")
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.Split(line, "|")[1]
		last := ""
		for _, m := range name.FindAllStringSubmatch(first, -1) {
			n := m[1]
			if strings.HasPrefix(n, "_") {
				n = last + n
			}
			if a, rest, ok := strings.Cut(n, "("); ok {
				inner, tail, _ := strings.Cut(rest, ")")
				documented[a+tail], documented[a+inner+tail] = true, true
			} else {
				documented[n] = true
			}
			last = n
		}
	}
	for name, services := range read {
		if !documented[name] {
			t.Errorf("%s (read by %s) is not in docs/configuration.md", name, strings.Join(services, ", "))
		}
	}
	for name := range documented {
		if read[name] == nil {
			t.Errorf("docs/configuration.md lists %s, which no service reads", name)
		}
	}
}
