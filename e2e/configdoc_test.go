package e2e

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/orderflow/common-events/config"
	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/common-events/services"
	"github.com/orderflow/devstack/testenv"
)

var updateConfigDocs = flag.Bool("update-config-docs", false, "write docs/configuration.md's table of settings from the code (make config-docs)")

// The markers in docs/configuration.md between which the table of settings is the code's.
const (
	configDocsBegin = "<!-- config-docs: begin (make config-docs writes this table from the code; edit the last column only) -->"
	configDocsEnd   = "<!-- config-docs: end -->"
)

// docs/configuration.md's table of settings is the code's, both ways: one row for every
// setting a service reads (its ReadConfig, its kafka-setup), with the services that read
// it, its default and what it allows as the code says, and no other row. Only the last
// column, what a setting does, is written by hand; a setting without one fails. With
// -update-config-docs (make config-docs) the test writes the table instead.
func TestTheConfigurationPageIsTheCodes(t *testing.T) {
	path := filepath.Join(testenv.Root(t), "docs", "configuration.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	want, missing, err := configTable(page, readSettings())
	if err != nil {
		t.Fatal(err)
	}
	if *updateConfigDocs {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	} else if want != page {
		t.Errorf("docs/configuration.md's table of settings is not the code's: run make config-docs (and describe what is new)")
	}
	for _, name := range missing {
		t.Errorf("docs/configuration.md does not say what %s does: write it in the table's last column", name)
	}

	// A setting the code no longer reads loses its row; a new one gets a row to describe.
	settings := readSettings()
	fewer, _, _ := configTable(page, settings[1:])
	more, undescribed, _ := configTable(page, append(slices.Clone(settings), readSetting{Setting: config.Setting{Name: "NEW_SETTING"}, services: []string{"order-service"}}))
	if strings.Contains(fewer, "| `"+settings[0].Name+"` |") || !strings.Contains(more, "| `NEW_SETTING` | order-service |") || !slices.Contains(undescribed, "NEW_SETTING") {
		t.Errorf("the table does not follow the code: without %s it still has its row, or NEW_SETTING gets none or a description", settings[0].Name)
	}
}

// readSetting is a setting and what reads it: each service's default, when they differ.
type readSetting struct {
	config.Setting
	services []string          // the services whose configuration reads it
	setup    []string          // those whose kafka-setup alone reads it
	defaults map[string]string // by service
}

// readSettings is every setting the services read, in the order first read: their
// configuration with nothing set, with SASL_SSL and with the Stripe provider, then their
// kafka-setup's.
func readSettings() []readSetting {
	var out []readSetting
	add := func(service string, setup bool, ss []config.Setting) {
		for _, s := range ss {
			i := slices.IndexFunc(out, func(r readSetting) bool { return r.Name == s.Name })
			if i < 0 {
				out = append(out, readSetting{Setting: s, defaults: map[string]string{}})
				i = len(out) - 1
			}
			r := &out[i]
			if r.Default == "" && r.Allowed == "" {
				r.Default, r.Allowed = s.Default, s.Allowed
			}
			if r.defaults[service] == "" {
				r.defaults[service] = s.Default
			}
			list := &r.services
			if setup {
				if slices.Contains(r.services, service) {
					continue
				}
				list = &r.setup
			}
			if !slices.Contains(*list, service) {
				*list = append(*list, service)
			}
		}
	}
	// Nothing set, then the settings only some choices read: a secure cluster's, Stripe's.
	for _, env := range []map[string]string{{}, {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, {"PAYMENT_PROVIDER": "stripe"}} {
		getenv := func(k string) string { return env[k] }
		for _, svc := range services.All() {
			ss, _ := settingsRead[svc.Name](getenv)
			add(svc.Name, false, ss)
		}
	}
	for _, env := range []map[string]string{{}, {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}} {
		getenv := func(k string) string { return env[k] }
		for _, svc := range services.All() {
			_, ss, _ := platform.ReadSetup(svc, getenv)
			add(svc.Name, true, ss)
		}
	}
	return out
}

// configTable returns page with its table of settings made from settings, keeping each
// setting's description (the last column) from page, and the settings with none.
func configTable(page string, settings []readSetting) (string, []string, error) {
	begin, end := strings.Index(page, configDocsBegin), strings.Index(page, configDocsEnd)
	if begin < 0 || end < begin {
		return "", nil, fmt.Errorf("docs/configuration.md has no %s … %s", configDocsBegin, configDocsEnd)
	}
	described := map[string]string{}
	for line := range strings.Lines(page[begin:end]) {
		cells := strings.Split(strings.TrimSpace(line), " | ")
		if len(cells) == 5 && strings.HasPrefix(cells[0], "| `") {
			described[strings.Trim(cells[0], "| `")] = strings.TrimSuffix(cells[4], " |")
		}
	}
	var b strings.Builder
	b.WriteString(configDocsBegin + "\n| variable | read by | default | allowed | what it does |\n|---|---|---|---|---|\n")
	var missing []string
	all := services.Names()
	for _, s := range settings {
		readBy := strings.Join(s.services, ", ")
		switch {
		case slices.Equal(s.services, all):
			readBy = "all"
		case len(s.services) == 0 && slices.Equal(s.setup, all):
			readBy = "kafka-setup"
		}
		who := s.services
		if len(who) == 0 {
			who = s.setup
		}
		def := cell(s.Default)
		if differ := slices.ContainsFunc(who, func(svc string) bool { return s.defaults[svc] != s.Default }); differ {
			var each []string
			for _, svc := range who {
				each = append(each, cell(s.defaults[svc])+" "+strings.TrimSuffix(svc, "-service"))
			}
			def = strings.Join(each, ", ")
		}
		what, ok := described[s.Name]
		if !ok || what == "" {
			missing = append(missing, s.Name)
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", s.Name, readBy, def, s.Allowed, what)
	}
	return page[:begin] + b.String() + page[end:], missing, nil
}

// cell is a default as the table shows it.
func cell(def string) string {
	switch def {
	case "":
		return "unset"
	case "required":
		return "required"
	}
	return "`" + strings.ReplaceAll(def, "|", `\|`) + "`"
}
