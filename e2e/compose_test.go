package e2e

// No Docker engine runs where these tests run, so docker-compose.yml is checked by loading
// it with the official compose-spec loader and holding it against the code: every setting
// a service is given is one it reads, every Dockerfile and every path it copies exists,
// our services have health checks and wait for what they need, and no image floats.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/orderflow/common-events/consumer"
	"github.com/orderflow/common-events/events"
	notificationapp "github.com/orderflow/notification-service/app"
	orderapp "github.com/orderflow/order-service/app"
	paymentapp "github.com/orderflow/payment-service/app"
)

// consumes lists each service's consumer groups and the topics they read.
var consumes = []map[string][]string{orderapp.Consumes(), paymentapp.Consumes(), notificationapp.Consumes()}

// settingsRead maps each of our compose services to the environment variables its
// configuration reads and the shutdown timeout it takes from getenv.
var settingsRead = map[string]func(getenv func(string) string) ([]string, time.Duration){
	"order-service": func(getenv func(string) string) ([]string, time.Duration) {
		cfg, names, _ := orderapp.ReadConfig(getenv)
		return names, cfg.ShutdownTimeout
	},
	"payment-service": func(getenv func(string) string) ([]string, time.Duration) {
		cfg, names, _ := paymentapp.ReadConfig(getenv)
		return names, cfg.ShutdownTimeout
	},
	"notification-service": func(getenv func(string) string) ([]string, time.Duration) {
		cfg, names, _ := notificationapp.ReadConfig(getenv)
		return names, cfg.ShutdownTimeout
	},
}

func loadCompose(t *testing.T, dir string, files ...string) (*types.Project, error) {
	t.Helper()
	var paths []string
	for _, f := range files {
		paths = append(paths, filepath.Join(dir, f))
	}
	opts, err := cli.NewProjectOptions(paths,
		cli.WithWorkingDirectory(dir), cli.WithName("orderflow"), cli.WithResolvedPaths(true))
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(context.Background())
}

// checkCompose returns every way the project disagrees with the code and the repository.
func checkCompose(p *types.Project) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	for name, svc := range p.Services {
		if svc.Image != "" {
			if err := pinned(svc.Image); err != nil {
				bad("service %s: %v", name, err)
			}
		} else if svc.Build == nil {
			bad("service %s has neither image nor build", name)
		}
	}
	for name, read := range settingsRead {
		svc, ok := p.Services[name]
		if !ok {
			bad("service %s is missing", name)
			continue
		}
		names, shutdown := read(func(k string) string {
			if v := svc.Environment[k]; v != nil {
				return *v
			}
			return ""
		})
		if grace := time.Duration(ptrOr(svc.StopGracePeriod, types.Duration(10*time.Second))); grace < shutdown+5*time.Second {
			bad("service %s: stop_grace_period %s leaves no margin over its SHUTDOWN_TIMEOUT %s: a clean stop would end in SIGKILL", name, grace, shutdown)
		}
		for _, port := range svc.Ports {
			if strings.Contains(port.Published, "-") {
				bad("service %s publishes the range %s: a single replica's port would move; ranges belong in docker-compose.scale.yml", name, port.Published)
			}
		}
		for k := range svc.Environment {
			if !slices.Contains(names, k) {
				bad("service %s is given %s, which it never reads", name, k)
			}
		}
		if svc.HealthCheck == nil || svc.HealthCheck.Disable || len(svc.HealthCheck.Test) == 0 {
			bad("service %s has no health check", name)
		} else if !strings.Contains(strings.Join(svc.HealthCheck.Test, " "), "/readyz") {
			bad("service %s health check does not ask /readyz", name)
		}
		for _, dep := range []string{"postgres", "kafka", "kafka-init"} {
			want := types.ServiceConditionHealthy
			if dep == "kafka-init" {
				want = types.ServiceConditionCompletedSuccessfully
			}
			if got := svc.DependsOn[dep].Condition; got != want {
				bad("service %s waits for %s with condition %q, want %q", name, dep, got, want)
			}
		}
		if svc.Restart == "" || svc.Restart == "no" {
			bad("service %s has no restart policy", name)
		}
		if svc.Build == nil {
			bad("service %s is not built from a Dockerfile", name)
			continue
		}
		if arg := svc.Build.Args["SERVICE"]; arg == nil || *arg != name {
			bad("service %s is not built with the build argument SERVICE=%s", name, name)
		}
		errs = append(errs, checkDockerfile(name, svc.Build.Context, svc.Build.Dockerfile)...)
	}
	// The Apache Kafka that tests and BROKER=kafka run is the one compose runs.
	if pom, err := os.ReadFile(filepath.Join(p.WorkingDir, "tools", "kafka", "pom.xml")); err != nil {
		bad("tools/kafka/pom.xml: %v", err)
	} else if m := regexp.MustCompile(`<kafka.version>([^<]+)</kafka.version>`).FindSubmatch(pom); m == nil {
		bad("tools/kafka/pom.xml names no kafka.version")
	} else {
		for _, name := range []string{"kafka", "kafka-init"} {
			if img := p.Services[name].Image; img != "apache/kafka:"+string(m[1]) {
				bad("service %s runs %s, but tools/kafka/pom.xml fetches Apache Kafka %s for the tests: keep them one version", name, img, m[1])
			}
		}
	}
	if pg, ok := p.Services["postgres"]; ok && (pg.HealthCheck == nil || !strings.Contains(strings.Join(pg.HealthCheck.Test, " "), "-h 127.0.0.1")) {
		bad("service postgres: the health check must ask over TCP (pg_isready -h 127.0.0.1): the init scripts' temporary server answers on the Unix socket before the databases exist")
	}
	if kafka, ok := p.Services["kafka"]; ok {
		dir := kafka.Environment["KAFKA_LOG_DIRS"]
		if dir == nil || !slices.ContainsFunc(kafka.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Type == types.VolumeTypeVolume && v.Target == *dir
		}) {
			bad("service kafka: KAFKA_LOG_DIRS must be set and be a named volume, or the log is lost on docker compose down")
		}
	}
	// Auto-creation is off on a real broker: kafka-init must create every topic and
	// every dead-letter topic the services use.
	if init, ok := p.Services["kafka-init"]; ok {
		created := strings.Fields(strings.NewReplacer("\\", " ", ";", " ").Replace(strings.Join(init.Command, " ")))
		want := events.Topics()
		for _, groups := range consumes {
			for group, topics := range groups {
				want = append(want, consumer.DeadLetterTopics(group, topics...)...)
			}
		}
		for _, topic := range want {
			if !slices.Contains(created, topic) {
				bad("kafka-init does not create topic %s", topic)
			}
		}
	}
	return errs
}

func ptrOr[T any](p *T, or T) T {
	if p == nil {
		return or
	}
	return *p
}

func pinned(image string) error {
	ref := image
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		ref = ref[i+1:]
	}
	_, tag, ok := strings.Cut(ref, ":")
	if !ok || tag == "" || tag == "latest" {
		return fmt.Errorf("image %q is not pinned to a version tag", image)
	}
	return nil
}

// checkDockerfile reads a Dockerfile: it must exist, pin every base image, and every path
// it copies from the build context must exist there.
func checkDockerfile(service, context, dockerfile string) []error {
	path := dockerfile
	if !filepath.IsAbs(path) {
		path = filepath.Join(context, dockerfile)
	}
	f, err := os.Open(path)
	if err != nil {
		return []error{fmt.Errorf("service %s: Dockerfile: %w", service, err)}
	}
	defer f.Close()
	var errs []error
	stages := map[string]bool{}
	sc := bufio.NewScanner(f)
	line := ""
	for sc.Scan() {
		text := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(text, "#") {
			continue
		}
		if strings.HasSuffix(text, "\\") {
			line += strings.TrimSuffix(text, "\\") + " "
			continue
		}
		line += text
		fields := strings.Fields(line)
		line = ""
		if len(fields) == 0 {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			args := withoutFlags(fields[1:])
			if len(args) == 0 {
				continue
			}
			if len(args) >= 3 && strings.EqualFold(args[1], "AS") {
				stages[args[2]] = true
			}
			if !stages[args[0]] {
				if err := pinned(args[0]); err != nil {
					errs = append(errs, fmt.Errorf("service %s: %s: FROM %w", service, dockerfile, err))
				}
			}
		case "COPY", "ADD":
			if slices.ContainsFunc(fields[1:], func(f string) bool { return strings.HasPrefix(f, "--from=") }) {
				continue
			}
			args := withoutFlags(fields[1:])
			if len(args) < 2 {
				continue
			}
			for _, src := range args[:len(args)-1] {
				matches, _ := filepath.Glob(filepath.Join(context, src))
				if len(matches) == 0 {
					errs = append(errs, fmt.Errorf("service %s: %s copies %s, which is not in the build context %s", service, dockerfile, src, context))
				}
			}
		}
	}
	return errs
}

func withoutFlags(fields []string) []string {
	var out []string
	for _, f := range fields {
		if !strings.HasPrefix(f, "--") {
			out = append(out, f)
		}
	}
	return out
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func TestComposeFileMatchesTheCode(t *testing.T) {
	root := repoRoot(t)
	p, err := loadCompose(t, root, "docker-compose.yml")
	if err != nil {
		t.Fatalf("docker-compose.yml does not load and validate: %v", err)
	}
	for _, err := range checkCompose(p) {
		t.Error(err)
	}
	for _, want := range []string{"kafka", "kafka-init", "kafka-ui", "postgres", "mailpit", "order-service", "payment-service", "notification-service"} {
		if _, ok := p.Services[want]; !ok {
			t.Errorf("service %s is missing", want)
		}
	}
}

// The scale variant replaces payment-service's single port by a range, one port a replica,
// and changes nothing else.
func TestComposeScaleOverride(t *testing.T) {
	root := repoRoot(t)
	base, err := loadCompose(t, root, "docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	scaled, err := loadCompose(t, root, "docker-compose.yml", "docker-compose.scale.yml")
	if err != nil {
		t.Fatalf("docker-compose.scale.yml does not load over docker-compose.yml: %v", err)
	}
	ports := scaled.Services["payment-service"].Ports
	if len(ports) != 1 || ports[0].Published != "8081-8083" || ports[0].Target != 8080 {
		t.Errorf("scaled payment-service publishes %+v, want only 8081-8083 -> 8080", ports)
	}
	if got := base.Services["payment-service"].Ports; len(got) != 1 || got[0].Published != "8081" {
		t.Errorf("payment-service publishes %+v, want 8081 alone", got)
	}
	for name, svc := range base.Services {
		if name == "payment-service" {
			continue
		}
		if !reflect.DeepEqual(svc, scaled.Services[name]) {
			t.Errorf("the scale override changes service %s", name)
		}
	}
}

// Each way of breaking the stack must be caught: the checks themselves are tested.
func TestComposeChecksCatchBreakage(t *testing.T) {
	root := repoRoot(t)
	original, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		edit       func(compose string) string
		dockerfile func(string) string
		want       string
	}{
		{name: "a topic not created",
			edit: func(s string) string {
				return strings.Replace(s, " payment.refunded.notification-service.dlq;", ";", 1)
			},
			want: "kafka-init does not create topic payment.refunded.notification-service.dlq"},
		{name: "misspelt setting",
			edit: func(s string) string {
				return strings.Replace(s, "KAFKA_BROKERS: kafka:29092", "KAFKA_BROKER: kafka:29092", 1)
			},
			want: "KAFKA_BROKER, which it never reads"},
		{name: "setting of another service",
			edit: func(s string) string {
				return strings.Replace(s, "SMTP_ADDR: mailpit:1025", "SMTP_ADDR: mailpit:1025\n      PROVIDER_LATENCY: 1s", 1)
			},
			want: "notification-service is given PROVIDER_LATENCY"},
		{name: "missing Dockerfile",
			edit: func(s string) string {
				return strings.Replace(s, "dockerfile: Dockerfile\n      args:\n        SERVICE: payment-service", "dockerfile: payment/Dockerfile\n      args:\n        SERVICE: payment-service", 1)
			},
			want: "service payment-service: Dockerfile"},
		{name: "built as another service",
			edit: func(s string) string {
				return strings.Replace(s, "SERVICE: payment-service", "SERVICE: order-service", 1)
			},
			want: "payment-service is not built with the build argument SERVICE=payment-service"},
		{name: "a port range for a single replica",
			edit: func(s string) string { return strings.Replace(s, `- "8081:8080"`, `- "8081-8083:8080"`, 1) },
			want: "payment-service publishes the range 8081-8083"},
		{name: "stop grace shorter than the shutdown timeout",
			edit: func(s string) string {
				return strings.Replace(s, "stop_grace_period: 30s", "stop_grace_period: 10s", 1)
			},
			want: "stop_grace_period 10s leaves no margin"},
		{name: "stop grace that is Docker's default",
			edit: func(s string) string { return strings.Replace(s, "  stop_grace_period: 30s\n", "", 1) },
			want: "stop_grace_period 10s leaves no margin"},
		{name: "a PostgreSQL health check on the Unix socket",
			edit: func(s string) string { return strings.Replace(s, "pg_isready -h 127.0.0.1 -p 5432 ", "pg_isready ", 1) },
			want: "health check must ask over TCP"},
		{name: "Kafka's log in the container",
			edit: func(s string) string {
				return strings.Replace(s, "    volumes:\n      - kafka-data:/var/lib/kafka/data\n", "", 1)
			},
			want: "KAFKA_LOG_DIRS must be set and be a named volume"},
		{name: "Dockerfile copies what is not there",
			dockerfile: func(s string) string {
				return strings.Replace(s, "COPY . .\nRUN test -f", "COPY schema/ schema/\nRUN test -f", 1)
			},
			want: "copies schema/"},
		{name: "floating base image",
			dockerfile: func(s string) string { return strings.Replace(s, "FROM alpine:3.22", "FROM alpine", 1) },
			want:       `image "alpine" is not pinned`},
		{name: "no health check",
			edit: func(s string) string {
				return strings.Replace(s, "  order-service:\n    <<: *service-defaults\n", "  order-service:\n    restart: unless-stopped\n", 1)
			},
			want: "order-service has no health check"},
		{name: "not waiting for the topics",
			edit: func(s string) string {
				return strings.Replace(s, "    depends_on: *backends\n", "    depends_on:\n      postgres:\n        condition: service_healthy\n      kafka:\n        condition: service_healthy\n", 1)
			},
			want: "payment-service waits for kafka-init"},
		{name: "a Kafka image other than the one the tests run",
			edit: func(s string) string {
				return strings.Replace(s, "image: apache/kafka:4.1.0", "image: apache/kafka:4.0.0", 1)
			},
			want: "service kafka runs apache/kafka:4.0.0, but tools/kafka/pom.xml fetches Apache Kafka 4.1.0"},
		{name: "latest image",
			edit: func(s string) string {
				return strings.Replace(s, "image: kafbat/kafka-ui:v1.2.0", "image: kafbat/kafka-ui:latest", 1)
			},
			want: `"kafbat/kafka-ui:latest" is not pinned`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyContext(t, root)
			compose := string(original)
			if tt.edit != nil {
				compose = tt.edit(compose)
				if compose == string(original) {
					t.Fatal("the edit changed nothing: the test is out of date")
				}
			}
			if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(compose), 0o644); err != nil {
				t.Fatal(err)
			}
			if tt.dockerfile != nil {
				path := filepath.Join(dir, "Dockerfile")
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				changed := tt.dockerfile(string(b))
				if changed == string(b) {
					t.Fatal("the edit changed nothing: the test is out of date")
				}
				if err := os.WriteFile(path, []byte(changed), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			p, err := loadCompose(t, dir, "docker-compose.yml")
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			errs := checkCompose(p)
			for _, err := range errs {
				if strings.Contains(err.Error(), tt.want) {
					return
				}
			}
			t.Errorf("the checks missed it: got %v, want an error containing %q", errs, tt.want)
		})
	}
}

// copyContext makes a copy of the repository parts the compose file and the Dockerfiles
// refer to, so a test can break them.
func copyContext(t *testing.T, root string) string {
	t.Helper()
	dir := t.TempDir()
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() && (rel == ".git" || rel == ".data" || rel == "bin" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
