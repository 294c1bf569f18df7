package e2e

// The compose stack is observed: Prometheus scrapes the services and evaluates the alert
// rules, Grafana shows the dashboard, Jaeger receives the traces. No Docker engine runs
// here, so what those services read is loaded as they load it (Prometheus's own loader and
// rule parser, the files they find through their bind mounts) and held against the compose
// file, the code and issue 15's thresholds. metrics_test.go checks that every metric the
// rules and the dashboard query is one a running service serves.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/dns" // registers dns_sd_configs with the loader
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
	"go.yaml.in/yaml/v3"

	"github.com/orderflow/common-events/metrics"
	"github.com/orderflow/devstack/testenv"
)

// Where the images read their configuration unless told otherwise.
const (
	prometheusDefaultConfig = "/etc/prometheus/prometheus.yml"
	grafanaProvisioning     = "/etc/grafana/provisioning" // GF_PATHS_PROVISIONING
	scrapeInterval          = 15 * time.Second            // docs/operations.md: "scrape every 15 s or so"
)

// The URLs the observability services reach each other and are reached at, over the
// compose network: Prometheus's and Jaeger's UI and API, Jaeger's OTLP/HTTP receiver.
const (
	prometheusURL = "http://prometheus:9090"
	jaegerURL     = "http://jaeger:16686"
	otlpHTTPURL   = "http://jaeger:4318"
)

// scaled are the services docker-compose.scale.yml runs several replicas of: Prometheus
// must find each replica by DNS, not scrape whichever one a name resolves to.
var scaled = []string{"payment-service"}

// issueAlerts are the alerts issue 15 asks for: the series each watches, the threshold
// it fires above, and the least time it must hold first (every alert holds a while).
var issueAlerts = []struct {
	name, selector string
	above          float64
	minFor         time.Duration
}{
	{"OutboxNotPublishing", "orderflow_outbox_oldest_row_age_seconds", 30, 0},
	{"ConsumerLagGrowing", "orderflow_consumer_lag_records", 0, 5 * time.Minute},
	{"RecordsDeadLettered", `orderflow_consumer_records_total{outcome="dead_lettered"}`, 0, 0},
	{"OrderPendingTooLong", "orderflow_orders_oldest_pending_age_seconds", 300, 0},
}

// promParser parses PromQL as the rule manager does.
var promParser = parser.NewParser(parser.Options{})

// checkObservability returns every way Prometheus, Grafana and Jaeger in the project
// disagree with the services, the repository and the issue.
func checkObservability(p *types.Project) []error {
	errs := checkPrometheus(p)
	errs = append(errs, checkGrafana(p)...)
	return append(errs, checkTracing(p)...)
}

// hostPath is the file of the repository that svc sees at target through its bind
// mounts, the innermost mount winning.
func hostPath(svc types.ServiceConfig, target string) (string, bool) {
	var best *types.ServiceVolumeConfig
	for i, v := range svc.Volumes {
		if v.Type == types.VolumeTypeBind && (target == v.Target || strings.HasPrefix(target, strings.TrimSuffix(v.Target, "/")+"/")) &&
			(best == nil || len(v.Target) > len(best.Target)) {
			best = &svc.Volumes[i]
		}
	}
	if best == nil {
		return "", false
	}
	return filepath.Join(best.Source, strings.TrimPrefix(target, best.Target)), true
}

// rel names a file of the project relative to its root, for messages.
func rel(p *types.Project, file string) string {
	if r, err := filepath.Rel(p.WorkingDir, file); err == nil {
		return r
	}
	return file
}

// prometheusSetup is what the prometheus service loads: its configuration and the rule
// files the configuration names, each read from the repository through the mounts.
type prometheusSetup struct {
	config    *config.Config
	ruleFiles map[string]*rulefmt.RuleGroups // by file
}

func loadPrometheus(p *types.Project) (*prometheusSetup, []error) {
	svc, ok := p.Services["prometheus"]
	if !ok {
		return nil, []error{fmt.Errorf("service prometheus is missing")}
	}
	target := prometheusDefaultConfig
	for _, arg := range svc.Command {
		if v, ok := strings.CutPrefix(arg, "--config.file="); ok {
			target = v
		}
	}
	file, ok := hostPath(svc, target)
	if !ok {
		return nil, []error{fmt.Errorf("service prometheus: its configuration %s is not mounted from the repository", target)}
	}
	discard := slog.New(slog.DiscardHandler)
	cfg, err := config.LoadFile(file, false, discard)
	if err != nil {
		return nil, []error{fmt.Errorf("service prometheus: %s does not load: %w", rel(p, file), err)}
	}
	s := &prometheusSetup{config: cfg, ruleFiles: map[string]*rulefmt.RuleGroups{}}
	var errs []error
	for _, pattern := range cfg.RuleFiles {
		// The loader resolved relative names against the file's directory in the
		// repository; Prometheus resolves them against its directory in the container.
		inContainer := pattern
		if r, err := filepath.Rel(filepath.Dir(file), pattern); err == nil && !strings.HasPrefix(r, "..") {
			inContainer = path.Join(path.Dir(target), filepath.ToSlash(r))
		}
		hostPattern, ok := hostPath(svc, inContainer)
		if !ok {
			errs = append(errs, fmt.Errorf("service prometheus: rule file %s is not mounted from the repository", inContainer))
			continue
		}
		matches, _ := filepath.Glob(hostPattern)
		for _, m := range matches {
			groups, perrs := rulefmt.ParseFile(m, false, model.UTF8Validation, promParser, discard)
			for _, err := range perrs {
				errs = append(errs, fmt.Errorf("service prometheus: %w", err))
			}
			if groups != nil {
				s.ruleFiles[m] = groups
			}
		}
	}
	if len(s.ruleFiles) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("service prometheus: %s loads no rule file: no alert would ever fire", rel(p, file)))
	}
	return s, errs
}

// recorded maps each series a recording rule writes to the expression it records.
func (s *prometheusSetup) recorded() map[string]parser.Expr {
	out := map[string]parser.Expr{}
	for _, groups := range s.ruleFiles {
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				if expr, err := promParser.ParseExpr(r.Expr); r.Record != "" && err == nil {
					out[r.Record] = expr
				}
			}
		}
	}
	return out
}

// checkPrometheus: Prometheus at the release whose loader the tests use; its configuration
// and rules load; it scrapes each service where it serves its metrics, every replica of a
// scaled one, and keeps the service label the metrics carry; every alert rule says how
// bad it is and what to do, and issue 15's alerts fire on its thresholds.
func checkPrometheus(p *types.Project) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	// The Prometheus compose runs is the one whose packages load its files here: module
	// v0.316.0 is Prometheus 3.16.0.
	if mod, err := os.ReadFile(filepath.Join(p.WorkingDir, "e2e", "go.mod")); err != nil {
		bad("e2e/go.mod: %v", err)
	} else if m := regexp.MustCompile(`github.com/prometheus/prometheus v0\.(\d+)(\d\d)\.(\d+)\s`).FindSubmatch(mod); m == nil {
		bad("e2e/go.mod does not require github.com/prometheus/prometheus v0.3xx.y")
	} else if want := fmt.Sprintf("prom/prometheus:v%s.%s.%s", m[1], strings.TrimPrefix(string(m[2]), "0"), m[3]); p.Services["prometheus"].Image != want {
		bad("service prometheus runs %s, but the tests load its configuration with Prometheus's packages of %s (e2e/go.mod): keep them one release", p.Services["prometheus"].Image, strings.TrimPrefix(want, "prom/prometheus:"))
	}
	s, lerrs := loadPrometheus(p)
	errs = append(errs, lerrs...)
	if s == nil {
		return errs
	}
	jobs, err := s.config.GetScrapeConfigs()
	if err != nil {
		bad("service prometheus: %v", err)
	}
	for name, read := range settingsRead {
		svc, ok := p.Services[name]
		if !ok {
			continue
		}
		_, cfg := read(getenv(svc))
		_, port, _ := net.SplitHostPort(cfg.HTTPAddr)
		job, byDNS := scrapeJob(jobs, name, port)
		switch {
		case job == nil:
			bad("Prometheus does not scrape %s:%s, where service %s serves its metrics (HTTP_ADDR)", name, port, name)
			continue
		case slices.Contains(scaled, name) && !byDNS:
			bad("Prometheus scrapes %s at one address: with --scale each replica is a target only when found by DNS (dns_sd_configs)", name)
		}
		if job.MetricsPath != metrics.Path {
			bad("Prometheus job %s scrapes %s, but the services serve their metrics at %s", job.JobName, job.MetricsPath, metrics.Path)
		}
		if time.Duration(job.ScrapeInterval) != scrapeInterval {
			bad("Prometheus job %s scrapes every %s, want %s", job.JobName, job.ScrapeInterval, scrapeInterval)
		}
		if !job.HonorLabels && setsLabel(job, "service") {
			bad("Prometheus job %s sets the target label service, which overwrites the one every metric carries (or set honor_labels)", job.JobName)
		}
	}
	errs = append(errs, checkRules(s)...)
	return errs
}

// scrapeJob is the scrape configuration whose targets include name:port, and whether it
// finds them by DNS.
func scrapeJob(jobs []*config.ScrapeConfig, name, port string) (*config.ScrapeConfig, bool) {
	for _, job := range jobs {
		for _, sd := range job.ServiceDiscoveryConfigs {
			switch c := sd.(type) {
			case discovery.StaticConfig:
				for _, g := range c {
					for _, t := range g.Targets {
						if string(t[model.AddressLabel]) == net.JoinHostPort(name, port) {
							return job, false
						}
					}
				}
			case *dns.SDConfig:
				if slices.Contains(c.Names, name) && strconv.Itoa(c.Port) == port && c.Type != "SRV" {
					return job, true
				}
			}
		}
	}
	return nil, false
}

// setsLabel reports whether job gives its targets or their series the label name.
func setsLabel(job *config.ScrapeConfig, name string) bool {
	for _, sd := range job.ServiceDiscoveryConfigs {
		if c, ok := sd.(discovery.StaticConfig); ok {
			for _, g := range c {
				if _, ok := g.Labels[model.LabelName(name)]; ok {
					return true
				}
			}
		}
	}
	for _, rc := range append(slices.Clone(job.RelabelConfigs), job.MetricRelabelConfigs...) {
		if rc.TargetLabel == name {
			return true
		}
	}
	return false
}

// checkRules: every alert holds for a while, says how bad it is and what to do; each of
// issue 15's alerts compares what it watches with the issue's threshold.
func checkRules(s *prometheusSetup) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	alerts := map[string]parser.Expr{}
	fors := map[string]time.Duration{}
	for _, file := range slices.Sorted(maps.Keys(s.ruleFiles)) {
		for _, g := range s.ruleFiles[file].Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					continue
				}
				if r.For <= 0 {
					bad("alert %s has no for: one bad scrape would page someone", r.Alert)
				}
				if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
					bad("alert %s: severity %q, want warning or critical", r.Alert, sev)
				}
				for _, a := range []string{"summary", "description"} {
					if strings.TrimSpace(r.Annotations[a]) == "" {
						bad("alert %s has no %s: whoever it pages must read what happened and what to do", r.Alert, a)
					}
				}
				alerts[r.Alert], _ = promParser.ParseExpr(r.Expr) // rulefmt reported a bad one
				fors[r.Alert] = time.Duration(r.For)
			}
		}
	}
	recorded := s.recorded()
	for _, want := range issueAlerts {
		expr, ok := alerts[want.name]
		if !ok || expr == nil {
			bad("alert %s is missing (issue 15)", want.name)
			continue
		}
		matchers, err := promParser.ParseMetricSelector(want.selector)
		if err != nil {
			bad("issue 15's alert %s: %v", want.name, err)
			continue
		}
		if !comparesAbove(expr, matchers, want.above, recorded) {
			bad("alert %s does not fire on %s > %g (issue 15): %s", want.name, want.selector, want.above, expr)
		}
		if fors[want.name] < want.minFor {
			bad("alert %s holds for %s, want at least %s (issue 15)", want.name, fors[want.name], want.minFor)
		}
	}
	return errs
}

// comparesAbove reports whether expr holds a comparison "… > above" whose left side
// selects the series matchers select, directly or through a recording rule.
func comparesAbove(expr parser.Expr, matchers []*labels.Matcher, above float64, recorded map[string]parser.Expr) bool {
	found := false
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		b, ok := node.(*parser.BinaryExpr)
		if !ok || b.Op != parser.GTR {
			return nil
		}
		rhs := b.RHS
		for paren, ok := rhs.(*parser.ParenExpr); ok; paren, ok = rhs.(*parser.ParenExpr) {
			rhs = paren.Expr
		}
		n, ok := rhs.(*parser.NumberLiteral)
		if !ok || n.Val != above {
			return nil
		}
		found = found || slices.ContainsFunc(selectors(b.LHS, recorded), func(sel *parser.VectorSelector) bool {
			for _, m := range matchers {
				if !slices.ContainsFunc(sel.LabelMatchers, func(got *labels.Matcher) bool { return got.String() == m.String() }) {
					return false
				}
			}
			return true
		})
		return nil
	})
	return found
}

// selectors are the vector selectors of expr, those of the recording rules it reads
// included.
func selectors(expr parser.Expr, recorded map[string]parser.Expr) []*parser.VectorSelector {
	var out []*parser.VectorSelector
	expanded := map[string]bool{} // each recording rule once, whatever reads what
	var walk func(parser.Expr)
	walk = func(expr parser.Expr) {
		parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
			vs, ok := node.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			switch r, isRecorded := recorded[vs.Name]; {
			case !isRecorded:
				out = append(out, vs)
			case !expanded[vs.Name]:
				expanded[vs.Name] = true
				walk(r)
			}
			return nil
		})
	}
	walk(expr)
	return out
}

// grafanaDatasource is a data source as Grafana's provisioning declares it.
type grafanaDatasource struct {
	Name string `yaml:"name"`
	UID  string `yaml:"uid"`
	Type string `yaml:"type"`
	URL  string `yaml:"url"`
}

// dashboardPanel is what the checks read of a Grafana panel.
type dashboardPanel struct {
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	Targets    []struct {
		Datasource *datasourceRef `json:"datasource"`
		Expr       string         `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"` // a collapsed row's
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// grafanaSetup is what the grafana service provisions, read through its mounts.
type grafanaSetup struct {
	datasources []grafanaDatasource
	dashboards  map[string][]dashboardPanel // panels, by file
}

func loadGrafana(p *types.Project) (*grafanaSetup, []error) {
	svc, ok := p.Services["grafana"]
	if !ok {
		return nil, []error{fmt.Errorf("service grafana is missing")}
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	target := cmp.Or(getenv(svc)("GF_PATHS_PROVISIONING"), grafanaProvisioning)
	dir, ok := hostPath(svc, target)
	if !ok {
		return nil, []error{fmt.Errorf("service grafana: nothing is mounted at %s: no data source and no dashboard would be provisioned", target)}
	}
	g := &grafanaSetup{dashboards: map[string][]dashboardPanel{}}
	yamls := func(sub string) []string {
		a, _ := filepath.Glob(filepath.Join(dir, sub, "*.yaml"))
		b, _ := filepath.Glob(filepath.Join(dir, sub, "*.yml"))
		return append(a, b...)
	}
	for _, file := range yamls("datasources") {
		var f struct {
			Datasources []grafanaDatasource `yaml:"datasources"`
		}
		if err := readYAML(file, &f); err != nil {
			bad("service grafana: %s: %v", rel(p, file), err)
		}
		g.datasources = append(g.datasources, f.Datasources...)
	}
	var providers int
	for _, file := range yamls("dashboards") {
		var f struct {
			Providers []struct {
				Name    string `yaml:"name"`
				Options struct {
					Path string `yaml:"path"`
				} `yaml:"options"`
			} `yaml:"providers"`
		}
		if err := readYAML(file, &f); err != nil {
			bad("service grafana: %s: %v", rel(p, file), err)
		}
		for _, prov := range f.Providers {
			providers++
			dashDir, ok := hostPath(svc, prov.Options.Path)
			if !ok {
				bad("service grafana: dashboard provider %s loads %s, where nothing is mounted", prov.Name, prov.Options.Path)
				continue
			}
			files, _ := filepath.Glob(filepath.Join(dashDir, "*.json"))
			if len(files) == 0 {
				bad("service grafana: dashboard provider %s finds no dashboard in %s", prov.Name, rel(p, dashDir))
			}
			for _, file := range files {
				b, err := os.ReadFile(file)
				var d struct {
					Panels []dashboardPanel `json:"panels"`
				}
				if err == nil {
					err = json.Unmarshal(b, &d)
				}
				if err != nil {
					bad("service grafana: dashboard %s: %v", rel(p, file), err)
					continue
				}
				g.dashboards[file] = d.Panels
			}
		}
	}
	if providers == 0 {
		bad("service grafana: no dashboard provider under %s/dashboards", rel(p, dir))
	}
	return g, errs
}

func readYAML(file string, v any) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	return yaml.Unmarshal(b, v)
}

// panels are the dashboard's panels, those of collapsed rows included.
func panels(ps []dashboardPanel) []dashboardPanel {
	var out []dashboardPanel
	for _, p := range ps {
		out = append(append(out, p), panels(p.Panels)...)
	}
	return out
}

// checkGrafana: Grafana reads Prometheus and Jaeger at their services; the repository's
// dashboard is the one provisioned, and each panel reads a provisioned data source.
func checkGrafana(p *types.Project) []error {
	g, errs := loadGrafana(p)
	if g == nil {
		return errs
	}
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	uids := map[string]bool{}
	for _, want := range []struct{ kind, url string }{{"prometheus", prometheusURL}, {"jaeger", jaegerURL}} {
		i := slices.IndexFunc(g.datasources, func(d grafanaDatasource) bool { return d.Type == want.kind })
		if i < 0 {
			bad("service grafana: no %s data source is provisioned", want.kind)
			continue
		}
		if got := strings.TrimSuffix(g.datasources[i].URL, "/"); got != want.url {
			bad("service grafana: the %s data source reads %s, want %s (the %s service over the compose network)", want.kind, got, want.url, want.kind)
		}
	}
	for _, d := range g.datasources {
		if d.UID == "" {
			bad("service grafana: data source %s has no fixed uid: the dashboard cannot name it", d.Name)
		}
		uids[d.UID] = true
	}
	if !slices.ContainsFunc(slices.Collect(maps.Keys(g.dashboards)), func(f string) bool {
		return filepath.Base(f) == "orderflow.json"
	}) {
		bad("service grafana: no provider loads the dashboard deploy/grafana/dashboards/orderflow.json")
	}
	for file, ps := range g.dashboards {
		for _, panel := range panels(ps) {
			refs := []*datasourceRef{panel.Datasource}
			for _, t := range panel.Targets {
				refs = append(refs, t.Datasource)
			}
			for _, ref := range refs {
				if ref != nil && !uids[ref.UID] {
					bad("dashboard %s: panel %q reads the data source %q, which is not provisioned", rel(p, file), panel.Title, ref.UID)
				}
			}
		}
	}
	return errs
}

// checkTracing: every service sends its traces to Jaeger's OTLP/HTTP receiver, over HTTP.
func checkTracing(p *types.Project) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	jaeger, ok := p.Services["jaeger"]
	if !ok {
		return []error{fmt.Errorf("service jaeger is missing")}
	}
	u, _ := url.Parse(otlpHTTPURL)
	if !slices.Contains(jaeger.Expose, u.Port()) {
		bad("service jaeger does not expose %s, its OTLP/HTTP receiver", u.Port())
	}
	for name := range settingsRead {
		svc, ok := p.Services[name]
		if !ok {
			continue
		}
		env := getenv(svc)
		if got := strings.TrimSuffix(env("OTEL_EXPORTER_OTLP_ENDPOINT"), "/"); got != otlpHTTPURL {
			bad("service %s: OTEL_EXPORTER_OTLP_ENDPOINT %q, want %s: Jaeger's OTLP/HTTP receiver over the compose network", name, got, otlpHTTPURL)
		}
		if got := env("OTEL_EXPORTER_OTLP_PROTOCOL"); got != "http/protobuf" {
			bad("service %s: OTEL_EXPORTER_OTLP_PROTOCOL %q, want http/protobuf, what port %s speaks", name, got, u.Port())
		}
	}
	return errs
}

// grafanaVariable matches Grafana's built-in interval variables, given a value when a
// query is parsed outside Grafana.
var grafanaVariable = regexp.MustCompile(`\$__\w+|\$\{__\w+\}`)

// queriedMetrics maps each metric the alert rules and the dashboards read to where they
// read it. Series a recording rule writes, and up, which Prometheus writes for each
// target, are not asked of the services.
func queriedMetrics(p *types.Project) (map[string][]string, []error) {
	s, errs := loadPrometheus(p)
	g, gerrs := loadGrafana(p)
	errs = append(errs, gerrs...)
	if s == nil || g == nil {
		return nil, errs
	}
	recorded := s.recorded()
	queried := map[string][]string{}
	read := func(where, expr string) {
		e, err := promParser.ParseExpr(grafanaVariable.ReplaceAllString(expr, "5m"))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			return
		}
		for _, vs := range selectors(e, recorded) {
			if vs.Name != "up" && !slices.Contains(queried[vs.Name], where) {
				queried[vs.Name] = append(queried[vs.Name], where)
			}
		}
	}
	for _, file := range slices.Sorted(maps.Keys(s.ruleFiles)) {
		for _, grp := range s.ruleFiles[file].Groups {
			for _, r := range grp.Rules {
				read(fmt.Sprintf("%s: rule %s%s", rel(p, file), r.Alert, r.Record), r.Expr)
			}
		}
	}
	for _, file := range slices.Sorted(maps.Keys(g.dashboards)) {
		for _, panel := range panels(g.dashboards[file]) {
			for _, t := range panel.Targets {
				if t.Expr != "" {
					read(fmt.Sprintf("%s: panel %q", rel(p, file), panel.Title), t.Expr)
				}
			}
		}
	}
	return queried, errs
}

// unserved returns a problem for each metric the rules and dashboards read that served,
// the names the services serve, lacks.
func unserved(p *types.Project, served map[string]bool) []error {
	queried, errs := queriedMetrics(p)
	for _, name := range slices.Sorted(maps.Keys(queried)) {
		if !served[name] {
			errs = append(errs, fmt.Errorf("%s read %s, which no service serves", strings.Join(queried[name], "; "), name))
		}
	}
	return errs
}

// Each alert fires when what it watches goes wrong and stays quiet while the stack is
// well: the rule files Prometheus loads are evaluated by Prometheus's own rule manager,
// every 15 s as configured, over series written as promtool's rule tests write them (one
// value a scrape, 15 s apart; _ for no sample, axn for a repeated n more times).
func TestAlertsFireWhenTheyShould(t *testing.T) {
	p, err := loadCompose(t, testenv.Root(t), "docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	s, errs := loadPrometheus(p)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	// Two scrapes' worth of every target up, and payment-service's three replicas.
	const up = `
		up{job="order-service",instance="order-service:8080"} 1x80
		up{job="notification-service",instance="notification-service:8080"} 1x80
		up{job="reconciliation-service",instance="reconciliation-service:8080"} 1x80
		up{job="payment-service",instance="10.0.0.1:8080"} 1x80
		up{job="payment-service",instance="10.0.0.2:8080"} 1x80`
	lag := func(instance, values string) string {
		return `orderflow_consumer_lag_records{service="payment-service",instance="` + instance +
			`",group="payment-service",topic="order.created",partition="0"} ` + values
	}
	deadLettered := `orderflow_consumer_records_total{service="payment-service",instance="10.0.0.1:8080",group="payment-service",topic="order.created",outcome="dead_lettered"} `
	tests := []struct {
		name   string
		series string
		at     time.Duration
		firing map[string]int // alert: how many fire; every other alert is quiet
		// missedBy is a simpler expression that would not have seen it.
		missedBy string
	}{
		{name: "a healthy stack", at: 20 * time.Minute, series: up + `
			orderflow_outbox_oldest_row_age_seconds{service="order-service",instance="order-service:8080"} 0 0.02 0 0.4 0x76
			orderflow_orders_oldest_pending_age_seconds{service="order-service",instance="order-service:8080"} 0 0.5 0 1.2 0x76
			` + lag("10.0.0.1:8080", "0 3 1 0 2 0 4 1 0 0 2 1 0 3 0 1 0 2 0 0 1x60") + `
			orderflow_consumer_records_total{service="payment-service",instance="10.0.0.1:8080",group="payment-service",topic="order.created",outcome="applied"} 0+7x80`},
		{name: "an outbox row waiting", at: 3 * time.Minute, series: up + `
			orderflow_outbox_oldest_row_age_seconds{service="order-service",instance="order-service:8080"} 0x3 15+15x20`,
			firing: map[string]int{"OutboxNotPublishing": 1}},
		{name: "an outbox row waiting 30 s, not yet 30 s more", at: 90 * time.Second, series: up + `
			orderflow_outbox_oldest_row_age_seconds{service="order-service",instance="order-service:8080"} 0x3 15+15x20`},
		{name: "lag growing on every replica's report", at: 12 * time.Minute, series: up + `
			` + lag("10.0.0.1:8080", "0+3x80") + `
			` + lag("10.0.0.2:8080", "0+3x80"),
			firing: map[string]int{"ConsumerLagGrowing": 1}},
		// A replica that cannot read the lag serves NaN, which the per-partition max
		// skips: the other replica's reading still counts (a value kept from its last
		// reading, 500 say, would win the max and hide the growth).
		{name: "lag growing on one replica's report, unreadable on the other's", at: 12 * time.Minute, series: up + `
			` + lag("10.0.0.1:8080", "0+3x80") + `
			` + lag("10.0.0.2:8080", strings.Repeat("NaN ", 81)),
			firing: map[string]int{"ConsumerLagGrowing": 1}},
		{name: "lag unreadable", at: 12 * time.Minute, series: up + `
			` + lag("10.0.0.1:8080", strings.Repeat("NaN ", 81))},
		{name: "lag high and steady", at: 15 * time.Minute, series: up + `
			` + lag("10.0.0.1:8080", "500x80")},
		{name: "lag growing for 3 minutes", at: 8 * time.Minute, series: up + `
			` + lag("10.0.0.1:8080", "0x20 0+3x12 36x60")},
		{name: "the first dead letter of a group and topic", at: 7 * time.Minute, series: up + `
			` + deadLettered + `_x19 1x60`,
			firing:   map[string]int{"RecordsDeadLettered": 1},
			missedBy: `increase(orderflow_consumer_records_total{outcome="dead_lettered"}[5m]) > 0`},
		{name: "one more dead letter", at: 10 * time.Minute, series: up + `
			` + deadLettered + `2x31 3x40`,
			firing: map[string]int{"RecordsDeadLettered": 1}},
		{name: "dead letters long ago", at: 20 * time.Minute, series: up + `
			` + deadLettered + `2x80`},
		{name: "an order pending for 6 minutes", at: 7 * time.Minute, series: up + `
			orderflow_orders_oldest_pending_age_seconds{service="order-service",instance="order-service:8080"} 0+15x80`,
			firing: map[string]int{"OrderPendingTooLong": 1}},
		{name: "a service down", at: 3 * time.Minute, series: up + `
			up{job="notification-service",instance="notification-service:8080"} 1x4 0x40`,
			firing: map[string]int{"ScrapeTargetDown": 1}},
		{name: "a mismatch held past the grace", at: 8 * time.Minute, series: up + `
			orderflow_reconciliation_mismatches{service="reconciliation-service",instance="reconciliation-service:8080",kind="confirmed_without_payment"} 0x4 1x40`,
			firing: map[string]int{"ReconciliationMismatch": 1}},
		{name: "a mismatch that cleared", at: 8 * time.Minute, series: up + `
			orderflow_reconciliation_mismatches{service="reconciliation-service",instance="reconciliation-service:8080",kind="final_without_email"} 0x4 1x8 0x30`},
		{name: "no payment-service replica", at: 3 * time.Minute, series: `
			up{job="order-service",instance="order-service:8080"} 1x80
			up{job="notification-service",instance="notification-service:8080"} 1x80`,
			firing: map[string]int{"PaymentServiceGone": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := evalRules(slices.Sorted(maps.Keys(s.ruleFiles)), time.Duration(s.config.GlobalConfig.EvaluationInterval), tt.series, tt.at, tt.missedBy)
			if err != nil {
				t.Fatal(err)
			}
			if tt.firing == nil {
				tt.firing = map[string]int{}
			}
			if !maps.Equal(got, tt.firing) {
				t.Errorf("at %s firing %v, want %v", tt.at, got, tt.firing)
			}
		})
	}
}

// evalRules evaluates the rule files every interval from 0 to at over series, and returns
// how many alerts of each rule fire then. A missedBy expression must give nothing at at.
func evalRules(files []string, interval time.Duration, series string, at time.Duration, missedBy string) (map[string]int, error) {
	suite, err := promqltest.NewLazyLoader("load 15s\n"+strings.TrimSpace(series), promqltest.LazyLoaderOpts{EnableAtModifier: true, EnableNegativeOffset: true})
	if err != nil {
		return nil, err
	}
	defer suite.Close()
	suite.SubqueryInterval = interval // a subquery's default step, as in Prometheus
	query := rules.EngineQueryFunc(suite.QueryEngine(), suite.Storage())
	m := rules.NewManager(&rules.ManagerOptions{
		QueryFunc:    query,
		AppendableV2: suite.Storage(),
		Context:      context.Background(),
		NotifyFunc:   func(context.Context, string, ...*rules.Alert) {},
		Logger:       slog.New(slog.DiscardHandler),
		Parser:       promParser,
	})
	groups, errs := m.LoadGroups(interval, labels.EmptyLabels(), "", nil, false, files...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, g := range groups {
		for _, r := range g.Rules() {
			if a, ok := r.(*rules.AlertingRule); ok {
				a.SetRestored(true) // as if Prometheus had been running all along
			}
		}
	}
	start := time.Unix(0, 0).UTC()
	for ts := start; !ts.After(start.Add(at)); ts = ts.Add(interval) {
		suite.WithSamplesTill(ts, func(e error) {
			if e != nil {
				err = e
				return
			}
			for _, g := range groups {
				g.Eval(suite.Context(), ts)
				for _, r := range g.Rules() {
					if r.LastError() != nil {
						err = fmt.Errorf("rule %s at %s: %w", r.Name(), ts.Sub(start), r.LastError())
					}
				}
			}
		})
		if err != nil {
			return nil, err
		}
	}
	if missedBy != "" {
		v, err := query(suite.Context(), missedBy, start.Add(at))
		if err != nil {
			return nil, err
		}
		if len(v) > 0 {
			return nil, fmt.Errorf("%s sees it too (%v): the rule's extra term is not needed", missedBy, v)
		}
	}
	firing := map[string]int{}
	for _, g := range groups {
		for _, r := range g.Rules() {
			if a, ok := r.(*rules.AlertingRule); ok {
				for _, alert := range a.ActiveAlerts() {
					if alert.State == rules.StateFiring {
						firing[a.Name()]++
					}
				}
			}
		}
	}
	return firing, nil
}
