package e2e

// No Docker engine runs where these tests run, so docker-compose.yml is checked by loading
// it with the official compose-spec loader and holding it against the code: every setting
// a service is given is one it reads, every Dockerfile and every path it copies exists,
// our services have health checks and wait for what they need, and no image floats.

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/orderflow/common-events/auth"
	"github.com/orderflow/common-events/config"
	"github.com/orderflow/devstack/compose"
	"github.com/orderflow/devstack/issuer"
	"github.com/orderflow/devstack/testenv"
	notificationapp "github.com/orderflow/notification-service/app"
	orderapp "github.com/orderflow/order-service/app"
	paymentapp "github.com/orderflow/payment-service/app"
	reconciliationapp "github.com/orderflow/reconciliation-service/app"
)

// settingsRead maps each of our compose services to the environment variables its
// configuration reads and the settings it takes from getenv.
var settingsRead = map[string]func(getenv func(string) string) ([]config.Setting, config.Base){
	"order-service": func(getenv func(string) string) ([]config.Setting, config.Base) {
		cfg, names, _ := orderapp.ReadConfig(getenv)
		return names, cfg.Base
	},
	"payment-service": func(getenv func(string) string) ([]config.Setting, config.Base) {
		cfg, names, _ := paymentapp.ReadConfig(getenv)
		return names, cfg.Base
	},
	"notification-service": func(getenv func(string) string) ([]config.Setting, config.Base) {
		cfg, names, _ := notificationapp.ReadConfig(getenv)
		return names, cfg.Base
	},
	"reconciliation-service": func(getenv func(string) string) ([]config.Setting, config.Base) {
		cfg, names, _ := reconciliationapp.ReadConfig(getenv)
		return names, cfg.Base
	},
}

// loadCompose loads files of dir as docker compose would, with .env as make up makes it
// (composeSecrets) and nothing of this machine's environment.
func loadCompose(t *testing.T, dir string, files ...string) (*types.Project, error) {
	t.Helper()
	return loadComposeWith(t, composeSecrets(t), dir, files...)
}

func loadComposeWith(t *testing.T, env map[string]string, dir string, files ...string) (*types.Project, error) {
	t.Helper()
	var paths []string
	for _, f := range files {
		paths = append(paths, filepath.Join(dir, f))
	}
	var vars []string
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	opts, err := cli.NewProjectOptions(paths, cli.WithEnv(vars),
		cli.WithWorkingDirectory(dir), cli.WithName("orderflow"), cli.WithResolvedPaths(true))
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(context.Background())
}

var secrets struct {
	once sync.Once
	env  map[string]string
	err  error
}

// composeSecrets are the variables of a .env that make up (compose.Ensure) makes, the
// same for every load in this test binary.
func composeSecrets(t *testing.T) map[string]string {
	t.Helper()
	secrets.once.Do(func() {
		dir, err := os.MkdirTemp("", "orderflow-compose-env-")
		if err != nil {
			secrets.err = err
			return
		}
		defer os.RemoveAll(dir)
		secrets.env, _, secrets.err = compose.Ensure(dir)
	})
	if secrets.err != nil {
		t.Fatalf("compose.Ensure: %v", secrets.err)
	}
	return secrets.env
}

// checkIdentity returns how service name under compose (svc, whose settings are cfg)
// disagrees with its identity in common-events/services: the host port it is published
// on, its database and its database role.
func checkIdentity(name string, svc types.ServiceConfig, cfg config.Base) []error {
	var errs []error
	id := identity(name)
	if len(svc.Ports) != 1 || svc.Ports[0].Published != strconv.Itoa(id.ComposePort) {
		errs = append(errs, fmt.Errorf("service %s publishes %v, want its port %d alone (services.%s.ComposePort)", name, svc.Ports, id.ComposePort, name))
	}
	u, err := url.Parse(cfg.DatabaseURL)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("service %s: DATABASE_URL: %v", name, err))
	case strings.TrimPrefix(u.Path, "/") != id.Database || u.User.Username() != id.Name:
		errs = append(errs, fmt.Errorf("service %s uses database %s as %s, want %s as %s", name, strings.TrimPrefix(u.Path, "/"), u.User.Username(), id.Database, id.Name))
	}
	return errs
}

// checkCompose returns every way the project disagrees with the code and the repository.
func checkCompose(p *types.Project) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	for name, svc := range p.Services {
		for _, port := range svc.Ports {
			if port.Published != "" && port.HostIP != "127.0.0.1" {
				bad("service %s publishes %s on %s: every port binds 127.0.0.1 unless ORDERFLOW_BIND says otherwise", name, port.Published, cmp.Or(port.HostIP, "every interface"))
			}
		}
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
		settings, cfg := read(getenv(svc))
		names := config.Names(settings)
		if grace := time.Duration(ptrOr(svc.StopGracePeriod, types.Duration(10*time.Second))); grace < cfg.ShutdownTimeout+5*time.Second {
			bad("service %s: stop_grace_period %s leaves no margin over its SHUTDOWN_TIMEOUT %s: a clean stop would end in SIGKILL", name, grace, cfg.ShutdownTimeout)
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
		for _, dep := range []string{"postgres", "kafka", name + "-kafka-setup", "keycloak"} {
			want := types.ServiceConditionHealthy
			if dep == name+"-kafka-setup" {
				want = types.ServiceConditionCompletedSuccessfully
			}
			if got := svc.DependsOn[dep].Condition; got != want {
				bad("service %s waits for %s with condition %q, want %q", name, dep, got, want)
			}
		}
		if svc.Restart == "" || svc.Restart == "no" {
			bad("service %s has no restart policy", name)
		}
		errs = append(errs, checkIdentity(name, svc, cfg)...)
		errs = append(errs, checkHardened(name, svc)...)
		errs = append(errs, checkKafkaLogin(p, name, svc, name)...)
		errs = append(errs, checkBuild(name, svc, name)...)
		errs = append(errs, checkKafkaSetup(p, name)...)
	}
	// The Apache Kafka that tests and BROKER=kafka run is the one compose runs.
	if pom, err := os.ReadFile(filepath.Join(p.WorkingDir, "tools", "kafka", "pom.xml")); err != nil {
		bad("tools/kafka/pom.xml: %v", err)
	} else if m := regexp.MustCompile(`<kafka.version>([^<]+)</kafka.version>`).FindSubmatch(pom); m == nil {
		bad("tools/kafka/pom.xml names no kafka.version")
	} else {
		if img := p.Services["kafka"].Image; img != "apache/kafka:"+string(m[1]) {
			bad("service kafka runs %s, but tools/kafka/pom.xml fetches Apache Kafka %s for the tests: keep them one version", img, m[1])
		}
	}
	if pg, ok := p.Services["postgres"]; ok && (pg.HealthCheck == nil || !strings.Contains(strings.Join(pg.HealthCheck.Test, " "), "-h 127.0.0.1")) {
		bad("service postgres: the health check must ask over TCP (pg_isready -h 127.0.0.1): the init scripts' temporary server answers on the Unix socket before the databases exist")
	}
	errs = append(errs, checkKafka(p)...)
	errs = append(errs, checkSecrets(p)...)
	errs = append(errs, checkKeycloak(p)...)
	return append(errs, checkObservability(p)...)
}

// The realm's clients and demo customers that the README, scripts/compose-token.sh and
// the tests name; a customer's id is the subject of her tokens.
const (
	customerClient = "orderflow-web"
	operatorClient = "orderflow-operator"
)

var demoCustomers = []struct{ username, id string }{
	{"ada", issuer.Customer},
	{"grace", "9d7e2c1a-4b3f-4e8d-a6c5-1f0e2d3c4b5a"},
}

// realmImportDir is where Keycloak's image reads realm files at --import-realm.
const realmImportDir = "/opt/keycloak/data/import/"

// realm is what the checks read of a Keycloak realm file.
type realm struct {
	Realm               string        `json:"realm"`
	BruteForceProtected bool          `json:"bruteForceProtected"`
	ClientScopes        []clientScope `json:"clientScopes"`
	Clients             []realmClient `json:"clients"`
	Users               []realmUser   `json:"users"`
}

type clientScope struct {
	Name            string            `json:"name"`
	Attributes      map[string]string `json:"attributes"`
	ProtocolMappers []protocolMapper  `json:"protocolMappers"`
}

type realmClient struct {
	ClientID                  string           `json:"clientId"`
	PublicClient              bool             `json:"publicClient"`
	Secret                    string           `json:"secret"`
	DirectAccessGrantsEnabled bool             `json:"directAccessGrantsEnabled"`
	ServiceAccountsEnabled    bool             `json:"serviceAccountsEnabled"`
	DefaultClientScopes       []string         `json:"defaultClientScopes"`
	OptionalClientScopes      []string         `json:"optionalClientScopes"`
	ProtocolMappers           []protocolMapper `json:"protocolMappers"`
}

type realmUser struct {
	ID          string `json:"id"`
	Username    string `json:"username"`
	Enabled     bool   `json:"enabled"`
	Credentials []struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	} `json:"credentials"`
}

type protocolMapper struct {
	ProtocolMapper string            `json:"protocolMapper"`
	Config         map[string]string `json:"config"`
}

// find returns the element of s that is named name, or nil.
func find[T any](s []T, name string, nameOf func(T) string) *T {
	i := slices.IndexFunc(s, func(e T) bool { return nameOf(e) == name })
	if i < 0 {
		return nil
	}
	return &s[i]
}

func (r *realm) scope(name string) *clientScope {
	return find(r.ClientScopes, name, func(s clientScope) string { return s.Name })
}

func (r *realm) client(id string) *realmClient {
	return find(r.Clients, id, func(c realmClient) string { return c.ClientID })
}

func (r *realm) user(name string) *realmUser {
	return find(r.Users, name, func(u realmUser) string { return u.Username })
}

// password returns the demo password of user.
func (r *realm) password(user string) string {
	if u := r.user(user); u != nil {
		for _, c := range u.Credentials {
			if c.Type == "password" {
				return c.Value
			}
		}
	}
	return ""
}

// mappers are the protocol mappers of c's tokens: its own and its default scopes'. It
// reports the scopes c names that the realm does not define, which Keycloak skips.
func (r *realm) mappers(c *realmClient) (mappers []protocolMapper, undefined []string) {
	mappers = slices.Clone(c.ProtocolMappers)
	for _, name := range c.DefaultClientScopes {
		if s := r.scope(name); s != nil {
			mappers = append(mappers, s.ProtocolMappers...)
		} else {
			undefined = append(undefined, name)
		}
	}
	return mappers, undefined
}

// realmFile is the realm file the keycloak service imports: the bind mount into the
// image's import folder.
func realmFile(kc types.ServiceConfig) string {
	for _, v := range kc.Volumes {
		if v.Type == types.VolumeTypeBind && strings.HasPrefix(v.Target, realmImportDir) && strings.HasSuffix(v.Target, ".json") {
			return v.Source
		}
	}
	return ""
}

func loadRealm(path string) (*realm, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r realm
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// checkKeycloak holds the identity provider against the tests, the realm file and the
// services' settings: Keycloak at the version the tests run, importing the realm, healthy
// when it says so; every service trusting exactly the tokens it issues; the realm granting
// the scopes, audience and subjects the services read.
func checkKeycloak(p *types.Project) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	kc, ok := p.Services["keycloak"]
	if !ok {
		return []error{fmt.Errorf("service keycloak is missing")}
	}
	env := func(k, def string) string {
		if v := kc.Environment[k]; v != nil && *v != "" {
			return *v
		}
		return def
	}
	// The Keycloak that e2e/keycloak_test.go runs is the one compose runs.
	if pom, err := os.ReadFile(filepath.Join(p.WorkingDir, "tools", "keycloak", "pom.xml")); err != nil {
		bad("tools/keycloak/pom.xml: %v", err)
	} else if m := regexp.MustCompile(`<keycloak.version>([^<]+)</keycloak.version>`).FindSubmatch(pom); m == nil {
		bad("tools/keycloak/pom.xml names no keycloak.version")
	} else if want := "quay.io/keycloak/keycloak:" + string(m[1]); kc.Image != want {
		bad("service keycloak runs %s, but tools/keycloak/pom.xml fetches Keycloak %s for the tests: keep them one version", kc.Image, m[1])
	}
	// Keycloak 26 serves health on the management port, and only with KC_HEALTH_ENABLED.
	if env("KC_HEALTH_ENABLED", "") != "true" {
		bad("service keycloak: KC_HEALTH_ENABLED is not true: /health/ready would not answer and nothing waiting for keycloak would start")
	}
	management := env("KC_HTTP_MANAGEMENT_PORT", "9000")
	if kc.HealthCheck == nil || len(kc.HealthCheck.Test) == 0 {
		bad("service keycloak has no health check")
	} else if test := strings.Join(kc.HealthCheck.Test, " "); !strings.Contains(test, "/health/ready") ||
		!regexp.MustCompile(`\b`+regexp.QuoteMeta(management)+`\b`).MatchString(test) {
		bad("service keycloak: the health check must ask /health/ready on the management port %s, not %q", management, test)
	}
	if !slices.Contains(kc.Command, "--import-realm") {
		bad("service keycloak does not import the realm (--import-realm): command %q", kc.Command)
	}
	// Tokens fetched on the host carry KC_HOSTNAME: it must be where Keycloak is published.
	httpPort := env("KC_HTTP_PORT", "8080")
	hostname, err := url.Parse(env("KC_HOSTNAME", ""))
	if err != nil || hostname.Scheme == "" || hostname.Port() == "" {
		bad("service keycloak: KC_HOSTNAME %q is not a full URL (scheme, host, port): the issuer would change with the request", env("KC_HOSTNAME", ""))
		hostname = &url.URL{}
	} else {
		var published []string
		for _, port := range kc.Ports {
			if strconv.Itoa(int(port.Target)) == httpPort {
				published = append(published, port.Published)
			}
		}
		if !slices.Contains(published, hostname.Port()) {
			bad("service keycloak: KC_HOSTNAME %s is not where Keycloak is published (host ports %v for %s): tokens fetched on the host would name another issuer", hostname, published, httpPort)
		}
	}
	path := realmFile(kc)
	if path == "" {
		bad("service keycloak: no realm file mounted into %s", realmImportDir)
		return errs
	}
	r, err := loadRealm(path)
	if err != nil {
		bad("realm file: %v", err)
		return errs
	}
	errs = append(errs, checkRealmSecrets(r, kc)...)
	issuer := strings.TrimSuffix(hostname.String(), "/") + "/realms/" + r.Realm
	jwks := fmt.Sprintf("http://keycloak:%s/realms/%s/protocol/openid-connect/certs", httpPort, r.Realm)
	audiences := map[string]bool{}
	for name := range settingsRead {
		svc, ok := p.Services[name]
		if !ok {
			continue
		}
		cfg := config.ReadAuth(config.NewEnv(getenv(svc)))
		switch {
		case cfg.Issuer == "":
			bad("service %s is given no AUTH_ISSUER: it would refuse to start", name)
		case cfg.Issuer != issuer:
			bad("service %s: AUTH_ISSUER %q is not the issuer of Keycloak's tokens, %q (KC_HOSTNAME, /realms/, the realm file's realm)", name, cfg.Issuer, issuer)
		}
		switch {
		case cfg.JWKSURL == "":
			bad("service %s is given no AUTH_JWKS_URL: it would refuse to start", name)
		case cfg.JWKSURL != jwks:
			bad("service %s: AUTH_JWKS_URL %q, want %q: the keys are fetched from the keycloak service over the compose network", name, cfg.JWKSURL, jwks)
		}
		audiences[cfg.Audience] = true
	}
	return append(errs, checkRealm(r, audiences)...)
}

// checkRealm returns every way the realm would issue tokens the services refuse or
// misread: the scopes in the scope claim, the audience, a subject; the demo customers
// with their fixed ids; the operators' client.
func checkRealm(r *realm, audiences map[string]bool) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !r.BruteForceProtected {
		bad("realm file: brute-force protection is off (bruteForceProtected): anyone may guess the demo users' passwords for ever")
	}
	for _, scope := range []string{auth.ScopeCustomer, auth.ScopeOperator} {
		if s := r.scope(scope); s == nil {
			bad("realm file: no client scope %s", scope)
		} else if s.Attributes["include.in.token.scope"] != "true" {
			bad("realm file: client scope %s does not put its name in the token's scope claim (include.in.token.scope)", scope)
		}
	}
	clients := []struct {
		id          string
		grants, not string
	}{{customerClient, auth.ScopeCustomer, auth.ScopeOperator}, {operatorClient, auth.ScopeOperator, auth.ScopeCustomer}}
	for _, want := range clients {
		c := r.client(want.id)
		if c == nil {
			bad("realm file: no client %s", want.id)
			continue
		}
		if !slices.Contains(c.DefaultClientScopes, want.grants) {
			bad("realm file: client %s does not grant %s (defaultClientScopes)", c.ClientID, want.grants)
		}
		if slices.Contains(c.DefaultClientScopes, want.not) || slices.Contains(c.OptionalClientScopes, want.not) {
			bad("realm file: client %s grants %s", c.ClientID, want.not)
		}
		mappers, undefined := r.mappers(c)
		for _, name := range undefined {
			bad("realm file: client %s names the client scope %s, which the realm does not define (Keycloak skips it)", c.ClientID, name)
		}
		claims := func(kind, key, value string) bool {
			return slices.ContainsFunc(mappers, func(m protocolMapper) bool {
				return m.ProtocolMapper == kind && m.Config["access.token.claim"] == "true" && (key == "" || m.Config[key] == value)
			})
		}
		if !claims("oidc-sub-mapper", "", "") {
			bad("realm file: client %s: no oidc-sub-mapper in its scopes (Keycloak's scope basic): a user's access token would have no sub, and every service refuses it", c.ClientID)
		}
		for aud := range audiences {
			if !claims("oidc-audience-mapper", "included.custom.audience", aud) {
				bad("realm file: client %s: its tokens' aud would not contain %s, the services' AUTH_AUDIENCE (an oidc-audience-mapper)", c.ClientID, aud)
			}
		}
	}
	if c := r.client(customerClient); c != nil && (!c.PublicClient || !c.DirectAccessGrantsEnabled) {
		bad("realm file: client %s must be public with direct access grants: the demo gets a customer's token with the password grant", c.ClientID)
	}
	if c := r.client(operatorClient); c != nil && (c.PublicClient || c.Secret == "" || !c.ServiceAccountsEnabled) {
		bad("realm file: client %s must be confidential, with a secret and a service account: operators' tokens come from the client credentials grant", c.ClientID)
	}
	for _, want := range demoCustomers {
		switch u := r.user(want.username); {
		case u == nil:
			bad("realm file: no user %s", want.username)
		case u.ID != want.id:
			bad("realm file: user %s has id %q, want %s: a customer's id is the subject of her tokens", want.username, u.ID, want.id)
		case !u.Enabled || r.password(want.username) == "":
			bad("realm file: user %s is disabled or has no password: the demo cannot log in", want.username)
		}
	}
	return errs
}

// getenv reads svc's environment as the service's getenv would: unset is "".
func getenv(svc types.ServiceConfig) func(string) string {
	return func(k string) string { return ptrOr(svc.Environment[k], "") }
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

func TestComposeFileMatchesTheCode(t *testing.T) {
	root := testenv.Root(t)
	p, err := loadCompose(t, root, "docker-compose.yml")
	if err != nil {
		t.Fatalf("docker-compose.yml does not load and validate: %v", err)
	}
	for _, err := range checkCompose(p) {
		t.Error(err)
	}
	for _, want := range []string{"kafka", "order-service-kafka-setup", "payment-service-kafka-setup", "notification-service-kafka-setup",
		"reconciliation-service-kafka-setup", "kafka-ui", "postgres", "mailpit", "keycloak", "order-service", "payment-service",
		"notification-service", "reconciliation-service", "prometheus", "grafana", "jaeger"} {
		if _, ok := p.Services[want]; !ok {
			t.Errorf("service %s is missing", want)
		}
	}
}

// The scale variant replaces payment-service's single port by a range, one port a replica,
// and changes nothing else.
func TestComposeScaleOverride(t *testing.T) {
	root := testenv.Root(t)
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

// The Stripe variant runs stripe-mock, pinned to the version the tests build, on the
// loopback like every port, locked down like every container, and switches payment-service
// to PAYMENT_PROVIDER=stripe against it, reconciliation-service reading Stripe's records
// there too; nothing else changes, and the stack still passes every check.
func TestComposeStripeOverride(t *testing.T) {
	root := testenv.Root(t)
	base, err := loadCompose(t, root, "docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := loadCompose(t, root, "docker-compose.yml", "docker-compose.stripe.yml")
	if err != nil {
		t.Fatalf("docker-compose.stripe.yml does not load over docker-compose.yml: %v", err)
	}
	for _, err := range checkCompose(p) {
		t.Error(err)
	}
	mock, ok := p.Services["stripe-mock"]
	if !ok {
		t.Fatal("no stripe-mock service")
	}
	if mock.Image != "stripe/stripe-mock:"+testenv.StripeMockVersion {
		t.Errorf("stripe-mock's image is %s, want stripe/stripe-mock:%s, the version the tests run", mock.Image, testenv.StripeMockVersion)
	}
	if !mock.ReadOnly || len(mock.CapDrop) != 1 || mock.CapDrop[0] != "ALL" || !slices.Contains(mock.SecurityOpt, "no-new-privileges:true") {
		t.Errorf("stripe-mock is not locked down: read_only %v, cap_drop %v, security_opt %v", mock.ReadOnly, mock.CapDrop, mock.SecurityOpt)
	}
	for _, port := range mock.Ports {
		if port.HostIP != "127.0.0.1" {
			t.Errorf("stripe-mock publishes %s on %q, want the loopback", port.Published, port.HostIP)
		}
	}
	// payment-service charges through Stripe, and reconciliation-service reads its records.
	for _, service := range []string{"payment-service", "reconciliation-service"} {
		env := p.Services[service].Environment
		for k, want := range map[string]string{"PAYMENT_PROVIDER": "stripe", "STRIPE_API_BASE": "http://stripe-mock:12111"} {
			if v := env[k]; v == nil || *v != want {
				t.Errorf("%s's %s = %v, want %s", service, k, v, want)
			}
		}
		if v := env["STRIPE_API_KEY"]; v == nil || !strings.HasPrefix(*v, "sk_test_") {
			t.Errorf("%s's STRIPE_API_KEY = %v, want a test key", service, v)
		}
	}
	for name, svc := range base.Services {
		if name != "payment-service" && name != "reconciliation-service" && !reflect.DeepEqual(svc, p.Services[name]) {
			t.Errorf("the Stripe override changes service %s", name)
		}
	}
}

// Without .env, or with a secret missing from it, compose refuses to start, and its one
// line says what to do.
func TestComposeRefusesToStartWithoutASecret(t *testing.T) {
	root := testenv.Root(t)
	if _, err := loadComposeWith(t, nil, root, "docker-compose.yml"); err == nil || !strings.Contains(err.Error(), "run make up, which writes .env") {
		t.Errorf("without .env: %v, want a refusal that names make up", err)
	}
	for _, name := range compose.Secrets() {
		env := maps.Clone(composeSecrets(t))
		delete(env, name)
		_, err := loadComposeWith(t, env, root, "docker-compose.yml")
		if err == nil || !strings.Contains(err.Error(), "required variable "+name+" is missing a value: run make up") {
			t.Errorf("without %s: %v, want a refusal that names it and make up", name, err)
		}
	}
}

// Each way of breaking the stack must be caught: the checks themselves are tested.
func TestComposeChecksCatchBreakage(t *testing.T) {
	parallel(t)
	root := testenv.Root(t)
	original, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		edit       func(compose string) string
		dockerfile func(string) string
		realm      func(string) string // deploy/keycloak/orderflow-realm.json
		files      edits               // other files, by their path in the repository
		want       string
	}{
		{name: "a port on every interface",
			edit: replaced(`- "${ORDERFLOW_BIND:-127.0.0.1}:55432:5432"`, `- "55432:5432"`),
			want: "service postgres publishes 55432 on every interface"},
		{name: "a service on another's database",
			edit: replaced(`@postgres:5432/payments?`, `@postgres:5432/orders?`),
			want: "service payment-service uses database orders as payment-service, want payments as payment-service"},
		{name: "a service on another port",
			edit: replaced(`127.0.0.1}:8084:8080"`, `127.0.0.1}:8085:8080"`),
			want: "service notification-service publishes"},
		{name: "a service that may write its root filesystem",
			edit: replaced("  read_only: true\n", ""),
			want: "service payment-service may write to its root filesystem"},
		{name: "a service that may gain privileges",
			edit: replaced(`  security_opt: ["no-new-privileges:true"]`+"\n", ""),
			want: "service order-service may gain privileges"},
		{name: "a service with capabilities",
			edit: replaced("  cap_drop: [ALL]\n", "  cap_drop: [NET_RAW]\n"),
			want: "service notification-service holds Linux capabilities"},
		{name: "passwords guessed for ever",
			realm: replaced(`"bruteForceProtected": true`, `"bruteForceProtected": false`),
			want:  "brute-force protection is off"},
		{name: "a service without its kafka-setup",
			edit: func(s string) string {
				return strings.ReplaceAll(s, "notification-service-kafka-setup:", "notification-service-setup:")
			},
			want: "service notification-service-kafka-setup is missing"},
		{name: "a kafka-setup of another service",
			edit: replaced("    <<: *kafka-setup\n    build:\n      context: .\n      dockerfile: Dockerfile\n      args:\n        SERVICE: payment-service",
				"    <<: *kafka-setup\n    build:\n      context: .\n      dockerfile: Dockerfile\n      args:\n        SERVICE: order-service"),
			want: "service payment-service-kafka-setup is not built with the build argument SERVICE=payment-service"},
		{name: "a kafka-setup that does something else",
			edit: replaced(`  command: ["kafka-setup"]`, `  command: ["serve"]`),
			want: `runs ["serve"], want kafka-setup`},
		{name: "a kafka-setup restarted",
			edit: replaced("x-kafka-setup: &kafka-setup\n  restart: \"no\"", "x-kafka-setup: &kafka-setup\n  restart: on-failure"),
			want: `restarts ("on-failure")`},
		{name: "a kafka-setup that is not the broker's admin",
			edit: replaced("    KAFKA_SASL_USERNAME: admin\n", "    KAFKA_SASL_USERNAME: order-service\n"),
			want: `service order-service-kafka-setup logs in to the broker as "order-service", want admin`},
		{name: "a misspelt kafka-setup setting",
			edit: replaced("    KAFKA_TOPIC_PARTITIONS: 6\n    KAFKA_SECURITY_PROTOCOL", "    KAFKA_TOPIC_PARTITION: 6\n    KAFKA_SECURITY_PROTOCOL"),
			want: "service payment-service-kafka-setup is given KAFKA_TOPIC_PARTITION, which it never reads"},
		{name: "a service on a listener without login",
			edit: replaced("x-kafka-login: &kafka-login\n  KAFKA_SECURITY_PROTOCOL: SASL_PLAINTEXT\n  KAFKA_SASL_MECHANISM: SCRAM-SHA-512\n",
				"x-kafka-login: &kafka-login\n  KAFKA_SECURITY_PROTOCOL: PLAINTEXT\n"),
			want: `service order-service logs in to the broker with "PLAINTEXT"`},
		{name: "a service logging in as another",
			edit: replaced("      KAFKA_SASL_USERNAME: payment-service\n", "      KAFKA_SASL_USERNAME: order-service\n"),
			want: `service payment-service logs in to the broker as "order-service", want payment-service`},
		{name: "a service with another's password",
			edit: replaced("KAFKA_SASL_PASSWORD: ${KAFKA_PASSWORD_NOTIFICATION_SERVICE:?", "KAFKA_SASL_PASSWORD: ${KAFKA_PASSWORD_ORDER_SERVICE:?"),
			want: "service notification-service: KAFKA_SASL_PASSWORD is not the password of notification-service's login"},
		{name: "a principal without a login",
			edit: replaced("      KAFKA_PASSWORD_DLQ: ${KAFKA_PASSWORD_DLQ:?run make up, which writes .env}\n", ""),
			want: "service kafka makes no login for dlq"},
		{name: "a listener without login",
			files: edits{"deploy/kafka/server.properties": replaced("INTERNAL:SASL_PLAINTEXT,", "INTERNAL:PLAINTEXT,")},
			want:  `listener INTERNAL is "PLAINTEXT": every listener wants a SASL login`},
		{name: "the host's listener without TLS",
			files: edits{"deploy/kafka/server.properties": replaced("EXTERNAL:SASL_SSL", "EXTERNAL:SASL_PLAINTEXT")},
			want:  "listener EXTERNAL, which the host reaches (localhost:9092), is SASL_PLAINTEXT: want SASL_SSL"},
		{name: "a broker that lets anyone do anything",
			files: edits{"deploy/kafka/server.properties": replaced("allow.everyone.if.no.acl.found=false", "allow.everyone.if.no.acl.found=true")},
			want:  "service kafka checks no ACLs"},
		{name: "the broker's certificate not mounted",
			edit: replaced("      - ./.data/compose/pki/broker-keystore.pem:/etc/orderflow/kafka/broker-keystore.pem:ro\n", ""),
			want: "ssl.keystore.location \"/etc/orderflow/kafka/broker-keystore.pem\" is not where the certificate make up makes"},
		{name: "the broker started without its script",
			edit: replaced(`entrypoint: ["/etc/orderflow/kafka/start.sh"]`, `entrypoint: ["/etc/kafka/docker/run"]`),
			want: "service kafka must start with deploy/kafka/start.sh"},
		{name: "a password in the compose file",
			edit: replaced("GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:?run make up, which writes .env}", "GF_SECURITY_ADMIN_PASSWORD: orderflow"),
			want: "service grafana: GF_SECURITY_ADMIN_PASSWORD holds a password that is not one of .env's secrets"},
		{name: "a secret made and never read",
			edit: replaced("GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:?run make up, which writes .env}", "GF_SECURITY_ADMIN_PASSWORD: orderflow"),
			want: "make up makes GRAFANA_ADMIN_PASSWORD, which docker-compose.yml never reads"},
		{name: "a database password in its URL",
			edit: replaced("postgres://payment-service:${PAYMENT_SERVICE_DB_PASSWORD:?run make up, which writes .env}@", "postgres://payment-service:orderflow@"),
			want: "service payment-service: DATABASE_URL holds a password that is not one of .env's secrets"},
		{name: "a password in a login line",
			edit: replaced(`username="kafka-ui" password="${KAFKA_PASSWORD_KAFKA_UI:?run make up, which writes .env}"`, `username="kafka-ui" password="kafka-ui"`),
			want: "service kafka-ui: KAFKA_CLUSTERS_0_PROPERTIES_SASL_JAAS_CONFIG holds a password that is not one of .env's secrets"},
		{name: "a secret with a default",
			edit: replaced("POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?run make up, which writes .env}", "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-orderflow}"),
			want: "docker-compose.yml reads POSTGRES_PASSWORD, a secret, as ${POSTGRES_PASSWORD:-orderflow}: it must refuse to start without it"},
		{name: "a variable make up does not make",
			edit: replaced("GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:?run make up, which writes .env}", "GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_PASSWORD}"),
			want: "docker-compose.yml reads GRAFANA_PASSWORD, which make up does not make"},
		{name: "a password in the realm file",
			realm: replaced(`"value": "${KEYCLOAK_ADA_PASSWORD}"`, `"value": "ada-demo-password"`),
			want:  "realm file: user ada's password is written in the file"},
		{name: "a secret in the realm file",
			realm: replaced(`"secret": "${KEYCLOAK_OPERATOR_SECRET}"`, `"secret": "orderflow-operator-dev-secret"`),
			want:  "realm file: client orderflow-operator's secret is written in the file"},
		{name: "a realm placeholder Keycloak is not given",
			edit: replaced("      KEYCLOAK_GRACE_PASSWORD: ${KEYCLOAK_GRACE_PASSWORD:?run make up, which writes .env}\n", ""),
			want: "realm file names ${KEYCLOAK_GRACE_PASSWORD}, which service keycloak is not given"},
		{name: "misspelt setting",
			edit: replaced("KAFKA_BROKERS: kafka:29092", "KAFKA_BROKER: kafka:29092"),
			want: "KAFKA_BROKER, which it never reads"},
		{name: "setting of another service",
			edit: replaced("SMTP_ADDR: mailpit:1025", "SMTP_ADDR: mailpit:1025\n      PROVIDER_LATENCY: 1s"),
			want: "notification-service is given PROVIDER_LATENCY"},
		{name: "missing Dockerfile",
			edit: func(s string) string {
				return strings.ReplaceAll(s, "dockerfile: Dockerfile\n      args:\n        SERVICE: payment-service",
					"dockerfile: payment/Dockerfile\n      args:\n        SERVICE: payment-service")
			},
			want: "service payment-service: Dockerfile"},
		{name: "built as another service",
			edit: func(s string) string {
				return strings.ReplaceAll(s, "SERVICE: payment-service", "SERVICE: order-service")
			},
			want: "service payment-service is not built with the build argument SERVICE=payment-service"},
		{name: "a port range for a single replica",
			edit: replaced(`127.0.0.1}:8081:8080"`, `127.0.0.1}:8081-8083:8080"`),
			want: "payment-service publishes the range 8081-8083"},
		{name: "stop grace shorter than the shutdown timeout",
			edit: replaced("stop_grace_period: 30s", "stop_grace_period: 10s"),
			want: "stop_grace_period 10s leaves no margin"},
		{name: "stop grace that is Docker's default",
			edit: replaced("  stop_grace_period: 30s\n", ""),
			want: "stop_grace_period 10s leaves no margin"},
		{name: "a PostgreSQL health check on the Unix socket",
			edit: replaced("pg_isready -h 127.0.0.1 -p 5432 ", "pg_isready "),
			want: "health check must ask over TCP"},
		{name: "Kafka's log in the container",
			edit: replaced("      - kafka-data:/var/lib/kafka/data\n", ""),
			want: "log.dirs (\"/var/lib/kafka/data\") must be set and be a named volume"},
		{name: "Dockerfile copies what is not there",
			dockerfile: replaced("COPY . .\nRUN test -f", "COPY schema/ schema/\nRUN test -f"),
			want:       "copies schema/"},
		{name: "floating base image",
			dockerfile: replaced("FROM alpine:3.22", "FROM alpine"),
			want:       `image "alpine" is not pinned`},
		{name: "no health check",
			edit: replaced("  order-service:\n    <<: *service-defaults\n", "  order-service:\n    restart: unless-stopped\n"),
			want: "order-service has no health check"},
		{name: "not waiting for the topics",
			edit: replaced("      payment-service-kafka-setup:\n        condition: service_completed_successfully\n", ""),
			want: "payment-service waits for payment-service-kafka-setup"},
		{name: "a Kafka image other than the one the tests run",
			edit: replaced("image: apache/kafka:4.1.0", "image: apache/kafka:4.0.0"),
			want: "service kafka runs apache/kafka:4.0.0, but tools/kafka/pom.xml fetches Apache Kafka 4.1.0"},
		{name: "latest image",
			edit: replaced("image: kafbat/kafka-ui:v1.2.0", "image: kafbat/kafka-ui:latest"),
			want: `"kafbat/kafka-ui:latest" is not pinned`},
		{name: "a floating Keycloak image",
			edit: replaced("image: quay.io/keycloak/keycloak:26.5.6", "image: quay.io/keycloak/keycloak:latest"),
			want: `"quay.io/keycloak/keycloak:latest" is not pinned`},
		{name: "a Keycloak image other than the one the tests run",
			edit: replaced("image: quay.io/keycloak/keycloak:26.5.6", "image: quay.io/keycloak/keycloak:26.4.0"),
			want: "service keycloak runs quay.io/keycloak/keycloak:26.4.0, but tools/keycloak/pom.xml fetches Keycloak 26.5.6"},
		{name: "a service that trusts no issuer",
			edit: replaced("      <<: [*auth-environment, *tracing-environment, *kafka-login]\n", "      <<: [*tracing-environment, *kafka-login]\n"),
			want: "service order-service is given no AUTH_ISSUER"},
		{name: "not waiting for Keycloak",
			edit: replaced("x-backends: &backends\n  postgres:\n    condition: service_healthy\n  kafka:\n    condition: service_healthy\n  keycloak:\n    condition: service_healthy\n",
				"x-backends: &backends\n  postgres:\n    condition: service_healthy\n  kafka:\n    condition: service_healthy\n"),
			want: `notification-service waits for keycloak with condition ""`},
		{name: "an issuer the tokens do not name",
			edit: replaced("AUTH_ISSUER: http://localhost:8180/realms/orderflow", "AUTH_ISSUER: http://keycloak:8080/realms/orderflow"),
			want: `AUTH_ISSUER "http://keycloak:8080/realms/orderflow" is not the issuer of Keycloak's tokens, "http://localhost:8180/realms/orderflow"`},
		{name: "keys fetched from the service itself",
			edit: replaced("AUTH_JWKS_URL: http://keycloak:8080/", "AUTH_JWKS_URL: http://localhost:8180/"),
			want: "the keys are fetched from the keycloak service over the compose network"},
		{name: "Keycloak published on another port than KC_HOSTNAME's",
			edit: replaced(`127.0.0.1}:8180:8080"`, `127.0.0.1}:8181:8080"`),
			want: "KC_HOSTNAME http://localhost:8180 is not where Keycloak is published"},
		{name: "KC_HOSTNAME without a port",
			edit: replaced("KC_HOSTNAME: http://localhost:8180", "KC_HOSTNAME: localhost"),
			want: `KC_HOSTNAME "localhost" is not a full URL`},
		{name: "Keycloak's health check on the main port",
			edit: replaced("/dev/tcp/127.0.0.1/9000", "/dev/tcp/127.0.0.1/8080"),
			want: "the health check must ask /health/ready on the management port 9000"},
		{name: "Keycloak's health endpoints off",
			edit: replaced(`      KC_HEALTH_ENABLED: "true"`+"\n", ""),
			want: "KC_HEALTH_ENABLED is not true"},
		{name: "the realm not imported",
			edit: replaced(`command: ["start-dev", "--import-realm"]`, `command: ["start-dev"]`),
			want: "service keycloak does not import the realm"},
		{name: "no realm file",
			edit: replaced("./deploy/keycloak/orderflow-realm.json:/opt/keycloak/data/import/orderflow-realm.json:ro",
				"./deploy/keycloak:/opt/keycloak/themes:ro"),
			want: "no realm file mounted into /opt/keycloak/data/import/"},
		{name: "a realm file that is not JSON",
			realm: func(s string) string { return strings.TrimSuffix(strings.TrimSpace(s), "}") },
			want:  "orderflow-realm.json: unexpected end of JSON input"},
		{name: "a realm the services do not trust",
			realm: replaced(`"realm": "orderflow"`, `"realm": "shop"`),
			want:  `is not the issuer of Keycloak's tokens, "http://localhost:8180/realms/shop"`},
		{name: "a scope left out of the scope claim",
			realm: replaced(`"name": "orderflow:customer",
      "description": "Place orders and follow one's own",
      "protocol": "openid-connect",
      "attributes": {
        "include.in.token.scope": "true"`, `"name": "orderflow:customer",
      "description": "Place orders and follow one's own",
      "protocol": "openid-connect",
      "attributes": {
        "include.in.token.scope": "false"`),
			want: "client scope orderflow:customer does not put its name in the token's scope claim"},
		{name: "the operator scope missing",
			realm: replaced(`"name": "orderflow:operator"`, `"name": "orderflow:admin"`),
			want:  "no client scope orderflow:operator"},
		{name: "another audience",
			realm: replaced(`"included.custom.audience": "orderflow"`, `"included.custom.audience": "orders"`),
			want:  "client orderflow-web: its tokens' aud would not contain orderflow"},
		{name: "tokens without a subject",
			realm: replaced(`"name": "basic"`, `"name": "subject"`),
			want:  "client orderflow-web: no oidc-sub-mapper in its scopes"},
		{name: "a customer who is an operator",
			realm: replaced(`"defaultClientScopes": ["basic", "orderflow:customer"]`,
				`"defaultClientScopes": ["basic", "orderflow:customer", "orderflow:operator"]`),
			want: "client orderflow-web grants orderflow:operator"},
		{name: "customers without the password grant",
			realm: replaced(`"directAccessGrantsEnabled": true`, `"directAccessGrantsEnabled": false`),
			want:  "client orderflow-web must be public with direct access grants"},
		{name: "operators without a service account",
			realm: replaced(`"serviceAccountsEnabled": true`, `"serviceAccountsEnabled": false`),
			want:  "client orderflow-operator must be confidential, with a secret and a service account"},
		{name: "no operators' client",
			realm: replaced(`"clientId": "orderflow-operator"`, `"clientId": "orderflow-admin"`),
			want:  "no client orderflow-operator"},
		{name: "a demo customer with another id",
			realm: replaced(`"id": "5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a93"`, `"id": "5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a94"`),
			want:  `user ada has id "5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a94", want 5b0c3a4e-2f6d-4f1b-9a57-8d2e6c1f0a93`},
		{name: "a demo customer missing",
			realm: replaced(`"username": "grace"`, `"username": "hopper"`),
			want:  "no user grace"},
		{name: "a floating Prometheus image",
			edit: replaced("image: prom/prometheus:v3.16.0", "image: prom/prometheus:latest"),
			want: `"prom/prometheus:latest" is not pinned`},
		{name: "a Prometheus other than the one whose loader the tests use",
			edit: replaced("image: prom/prometheus:v3.16.0", "image: prom/prometheus:v3.5.0"),
			want: "service prometheus runs prom/prometheus:v3.5.0, but the tests load its configuration with Prometheus's packages of v3.16.0"},
		{name: "a floating Grafana image",
			edit: replaced("image: grafana/grafana:12.1.1", "image: grafana/grafana"),
			want: `"grafana/grafana" is not pinned`},
		{name: "a floating Jaeger image",
			edit: replaced("image: jaegertracing/jaeger:2.9.0", "image: jaegertracing/jaeger:latest"),
			want: `"jaegertracing/jaeger:latest" is not pinned`},
		{name: "Prometheus's configuration not mounted",
			edit: replaced("- ./deploy/prometheus:/etc/prometheus:ro", "- ./deploy/prometheus:/etc/prometheus/rules:ro"),
			want: "its configuration /etc/prometheus/prometheus.yml is not mounted"},
		{name: "a Prometheus configuration that does not load",
			files: edits{"deploy/prometheus/prometheus.yml": replaced("metrics_path: /metrics", "metric_path: /metrics")},
			want:  "prometheus.yml does not load"},
		{name: "a rule that does not parse",
			files: edits{"deploy/prometheus/alerts.yml": replaced("_oldest_row_age_seconds) > 30\n", "_oldest_row_age_seconds) > > 30\n")},
			want:  `"OutboxNotPublishing": could not parse expression`},
		{name: "no rule file loaded",
			files: edits{"deploy/prometheus/prometheus.yml": replaced("rule_files:\n  - alerts.yml\n", "")},
			want:  "loads no rule file"},
		{name: "rules where nothing is mounted",
			files: edits{"deploy/prometheus/prometheus.yml": replaced("  - alerts.yml\n", "  - /etc/rules/alerts.yml\n")},
			want:  "rule file /etc/rules/alerts.yml is not mounted"},
		{name: "a service not scraped where it serves",
			files: edits{"deploy/prometheus/prometheus.yml": replaced(`["notification-service:8080"]`, `["notification-service:8084"]`)},
			want:  "Prometheus does not scrape notification-service:8080"},
		{name: "a scaled service scraped at one address",
			files: edits{"deploy/prometheus/prometheus.yml": replaced(
				"    dns_sd_configs:\n      - names: [\"payment-service\"]\n        type: A\n        port: 8080\n        refresh_interval: 15s\n",
				"    static_configs:\n      - targets: [\"payment-service:8080\"]\n")},
			want: "Prometheus scrapes payment-service at one address"},
		{name: "metrics scraped at another path",
			files: edits{"deploy/prometheus/prometheus.yml": replaced("metrics_path: /metrics", "metrics_path: /prometheus")},
			want:  "scrapes /prometheus, but the services serve their metrics at /metrics"},
		{name: "another scrape interval",
			files: edits{"deploy/prometheus/prometheus.yml": replaced("  scrape_interval: 15s", "  scrape_interval: 1m")},
			want:  "scrapes every 1m, want 15s"},
		{name: "the service label overwritten",
			files: edits{"deploy/prometheus/prometheus.yml": replaced(`["order-service:8080"]`, "[\"order-service:8080\"]\n        labels:\n          service: orders")},
			want:  "Prometheus job order-service sets the target label service"},
		{name: "an alert on another threshold",
			files: edits{"deploy/prometheus/alerts.yml": replaced("_oldest_row_age_seconds) > 30\n", "_oldest_row_age_seconds) > 60\n")},
			want:  "alert OutboxNotPublishing does not fire on orderflow_outbox_oldest_row_age_seconds > 30"},
		{name: "the dead-letter alert counting another outcome",
			files: edits{"deploy/prometheus/alerts.yml": func(s string) string {
				return strings.ReplaceAll(s, `outcome="dead_lettered"`, `outcome="retried"`)
			}},
			want: `alert RecordsDeadLettered does not fire on orderflow_consumer_records_total{outcome="dead_lettered"} > 0`},
		{name: "lag growing for less than 5 minutes",
			files: edits{"deploy/prometheus/alerts.yml": replaced("        for: 5m\n", "        for: 1m\n")},
			want:  "alert ConsumerLagGrowing holds for 1m0s, want at least 5m0s"},
		{name: "an alert without for",
			files: edits{"deploy/prometheus/alerts.yml": replaced("        for: 30s\n", "")},
			want:  "alert OutboxNotPublishing has no for"},
		{name: "an alert without severity",
			files: edits{"deploy/prometheus/alerts.yml": replaced("          severity: critical\n", "")},
			want:  `alert OutboxNotPublishing: severity ""`},
		{name: "an alert that does not say what to do",
			files: edits{"deploy/prometheus/alerts.yml": replaced("          description: >-", "          runbook: >-")},
			want:  "alert OutboxNotPublishing has no description"},
		{name: "an alert of the issue missing",
			files: edits{"deploy/prometheus/alerts.yml": replaced("alert: OrderPendingTooLong", "alert: OrderPending")},
			want:  "alert OrderPendingTooLong is missing"},
		{name: "a service that sends no traces",
			edit: replaced("      <<: [*auth-environment, *tracing-environment, *kafka-login]\n", "      <<: [*auth-environment, *kafka-login]\n"),
			want: `service order-service: OTEL_EXPORTER_OTLP_ENDPOINT "", want http://jaeger:4318`},
		{name: "traces sent to the OTLP/gRPC port",
			edit: replaced("OTEL_EXPORTER_OTLP_ENDPOINT: http://jaeger:4318", "OTEL_EXPORTER_OTLP_ENDPOINT: http://jaeger:4317"),
			want: `OTEL_EXPORTER_OTLP_ENDPOINT "http://jaeger:4317", want http://jaeger:4318`},
		{name: "OTLP over gRPC",
			edit: replaced("OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL: grpc"),
			want: `OTEL_EXPORTER_OTLP_PROTOCOL "grpc", want http/protobuf`},
		{name: "a misspelt OpenTelemetry setting",
			edit: replaced("OTEL_EXPORTER_OTLP_ENDPOINT: ", "OTEL_EXPORTER_OTLP_ENDPIONT: "),
			want: "OTEL_EXPORTER_OTLP_ENDPIONT, which it never reads"},
		{name: "Jaeger not receiving OTLP/HTTP",
			edit: replaced("      - \"4318\"\n", ""),
			want: "service jaeger does not expose 4318"},
		{name: "Grafana reading Prometheus on localhost",
			files: edits{"deploy/grafana/provisioning/datasources/orderflow.yml": replaced("url: http://prometheus:9090", "url: http://localhost:9090")},
			want:  "the prometheus data source reads http://localhost:9090, want http://prometheus:9090"},
		{name: "Grafana reading Jaeger on localhost",
			files: edits{"deploy/grafana/provisioning/datasources/orderflow.yml": replaced("url: http://jaeger:16686", "url: http://localhost:16686")},
			want:  "the jaeger data source reads http://localhost:16686, want http://jaeger:16686"},
		{name: "Grafana's provisioning not mounted",
			edit: replaced("      - ./deploy/grafana/provisioning:/etc/grafana/provisioning:ro\n", ""),
			want: "nothing is mounted at /etc/grafana/provisioning"},
		{name: "the dashboards not mounted",
			edit: replaced("      - ./deploy/grafana/dashboards:/etc/grafana/dashboards:ro\n", ""),
			want: "dashboard provider orderflow loads /etc/grafana/dashboards, where nothing is mounted"},
		{name: "the dashboard not provisioned",
			files: edits{"deploy/grafana/provisioning/dashboards/orderflow.yml": replaced("path: /etc/grafana/dashboards", "path: /etc/grafana/provisioning")},
			want:  "no provider loads the dashboard deploy/grafana/dashboards/orderflow.json"},
		{name: "a dashboard that is not JSON",
			files: edits{"deploy/grafana/dashboards/orderflow.json": func(s string) string {
				return strings.TrimSuffix(strings.TrimSpace(s), "}")
			}},
			want: "dashboard deploy/grafana/dashboards/orderflow.json: unexpected end of JSON input"},
		{name: "a panel reading a data source not provisioned",
			files: edits{"deploy/grafana/dashboards/orderflow.json": replaced(`"uid": "prometheus"`, `"uid": "prom"`)},
			want:  `reads the data source "prom", which is not provisioned`},
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
			files := edits{
				"Dockerfile": tt.dockerfile,
				filepath.Join("deploy", "keycloak", "orderflow-realm.json"): tt.realm,
			}
			maps.Copy(files, tt.files)
			for file, edit := range files {
				if edit == nil {
					continue
				}
				path := filepath.Join(dir, file)
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				changed := edit(string(b))
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

// edits change files of the repository, by their path in it.
type edits map[string]func(string) string

// replaced is an edit that replaces the first old by new.
func replaced(old, new string) func(string) string {
	return func(s string) string { return strings.Replace(s, old, new, 1) }
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
