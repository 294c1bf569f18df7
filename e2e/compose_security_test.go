package e2e

// The compose file's security, checked statically: a container that can change nothing,
// a broker that lets in only its principals, each with its own login, and no secret in
// the repository.

import (
	"cmp"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/orderflow/common-events/config"
	"github.com/orderflow/common-events/kafka"
	"github.com/orderflow/common-events/platform"
	"github.com/orderflow/devstack/compose"
	"github.com/orderflow/devstack/kafkabroker"
)

// Where docker-compose.yml's kafka service finds what deploy/kafka and make up provide.
const (
	kafkaStart      = "/etc/orderflow/kafka/start.sh"
	kafkaProperties = "/etc/orderflow/kafka/server.properties"
)

// checkHardened: nothing in the container may change.
func checkHardened(name string, svc types.ServiceConfig) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !svc.ReadOnly {
		bad("service %s may write to its root filesystem: read_only: true", name)
	}
	if !slices.Contains(svc.SecurityOpt, "no-new-privileges:true") {
		bad("service %s may gain privileges (setuid): security_opt no-new-privileges:true", name)
	}
	if !slices.Contains(svc.CapDrop, "ALL") || len(svc.CapAdd) > 0 {
		bad("service %s holds Linux capabilities (cap_drop %v, cap_add %v): drop ALL, add none", name, svc.CapDrop, svc.CapAdd)
	}
	return errs
}

// checkBuild: svc (named name) is the image of service, built from the Dockerfile.
func checkBuild(name string, svc types.ServiceConfig, service string) []error {
	if svc.Build == nil {
		return []error{fmt.Errorf("service %s is not built from a Dockerfile", name)}
	}
	var errs []error
	if arg := svc.Build.Args["SERVICE"]; arg == nil || *arg != service {
		errs = append(errs, fmt.Errorf("service %s is not built with the build argument SERVICE=%s", name, service))
	}
	return append(errs, checkDockerfile(name, svc.Build.Context, svc.Build.Dockerfile)...)
}

// checkKafkaLogin: svc (named name) logs in to the broker with SASL as principal, with
// the password the broker made principal's login with.
func checkKafkaLogin(p *types.Project, name string, svc types.ServiceConfig, principal string) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	env := getenv(svc)
	if protocol := env("KAFKA_SECURITY_PROTOCOL"); protocol != kafka.SASLPlaintext && protocol != kafka.SASLSSL {
		bad("service %s logs in to the broker with %q: every listener wants SASL", name, cmp.Or(protocol, kafka.Plaintext))
	}
	if user := env("KAFKA_SASL_USERNAME"); user != principal {
		bad("service %s logs in to the broker as %q, want %s", name, user, principal)
	}
	want := getenv(p.Services["kafka"])(compose.KafkaPassword(principal))
	if got := env("KAFKA_SASL_PASSWORD"); want == "" || got != want {
		bad("service %s: KAFKA_SASL_PASSWORD is not the password of %s's login (the kafka service's %s)", name, principal, compose.KafkaPassword(principal))
	}
	return errs
}

// checkKafkaSetup: service has its one-shot kafka-setup, from its own image, logged in
// as the broker's admin, given only settings it reads.
func checkKafkaSetup(p *types.Project, service string) []error {
	name := service + "-kafka-setup"
	svc, ok := p.Services[name]
	if !ok {
		return []error{fmt.Errorf("service %s is missing: nothing creates %s's topics and grants its ACLs", name, service)}
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	errs = append(errs, checkBuild(name, svc, service)...)
	errs = append(errs, checkHardened(name, svc)...)
	errs = append(errs, checkKafkaLogin(p, name, svc, kafkabroker.Admin)...)
	if !slices.Equal(svc.Command, types.ShellCommand{"kafka-setup"}) {
		bad("service %s runs %q, want kafka-setup", name, svc.Command)
	}
	if svc.Restart != "no" {
		bad("service %s restarts (%q): a one-shot that ends must not be started again", name, svc.Restart)
	}
	if got := svc.DependsOn["kafka"].Condition; got != types.ServiceConditionHealthy {
		bad("service %s waits for kafka with condition %q, want %q", name, got, types.ServiceConditionHealthy)
	}
	_, settings, _ := platform.ReadSetup(identity(service), getenv(svc))
	names := config.Names(settings)
	for k := range svc.Environment {
		if !slices.Contains(names, k) {
			bad("service %s is given %s, which it never reads", name, k)
		}
	}
	return errs
}

// checkKafka: the broker runs deploy/kafka's settings, keeps its log on a volume, lets in
// only SASL logins (TLS on the listener the host reaches), checks ACLs, and has a login
// for every principal.
func checkKafka(p *types.Project) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	k, ok := p.Services["kafka"]
	if !ok {
		return []error{fmt.Errorf("service kafka is missing")}
	}
	mounted := func(target string) string {
		for _, v := range k.Volumes {
			if v.Type == types.VolumeTypeBind && v.Target == target {
				return v.Source
			}
		}
		return ""
	}
	if !slices.Equal(k.Entrypoint, types.ShellCommand{kafkaStart}) || mounted(kafkaStart) != filepath.Join(p.WorkingDir, "deploy", "kafka", "start.sh") {
		bad("service kafka must start with deploy/kafka/start.sh, mounted at %s (entrypoint %q)", kafkaStart, k.Entrypoint)
	}
	src := mounted(kafkaProperties)
	b, err := os.ReadFile(src)
	if err != nil {
		bad("service kafka: its settings %s: %v", kafkaProperties, err)
		return errs
	}
	props := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if key, value, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(key, "#") {
			props[key] = value
		}
	}
	if dir := props["log.dirs"]; dir == "" || !slices.ContainsFunc(k.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Type == types.VolumeTypeVolume && v.Target == dir
	}) {
		bad("service kafka: log.dirs (%q) must be set and be a named volume, or the log is lost on docker compose down", dir)
	}
	if props["allow.everyone.if.no.acl.found"] != "false" || !strings.HasSuffix(props["authorizer.class.name"], "StandardAuthorizer") {
		bad("service kafka checks no ACLs: authorizer.class.name StandardAuthorizer and allow.everyone.if.no.acl.found=false")
	}
	if want := filepath.Join(p.WorkingDir, compose.PKIDir, compose.KeyStoreFile); mounted(props["ssl.keystore.location"]) != want {
		bad("service kafka: ssl.keystore.location %q is not where the certificate make up makes (%s) is mounted", props["ssl.keystore.location"], want)
	}
	protocols := map[string]string{}
	for _, l := range strings.Split(props["listener.security.protocol.map"], ",") {
		if name, protocol, ok := strings.Cut(l, ":"); ok {
			protocols[name] = protocol
		}
	}
	for _, l := range strings.Split(props["advertised.listeners"]+","+props["listeners"], ",") {
		name, addr, _ := strings.Cut(l, "://")
		if name == "" {
			continue
		}
		switch protocol := protocols[name]; {
		case !strings.HasPrefix(protocol, "SASL_"):
			bad("service kafka: listener %s is %q: every listener wants a SASL login", name, protocol)
		case strings.HasPrefix(addr, "localhost:") && protocol != kafka.SASLSSL:
			bad("service kafka: listener %s, which the host reaches (%s), is %s: want SASL_SSL", name, addr, protocol)
		}
	}
	for _, principal := range compose.KafkaPrincipals() {
		if getenv(k)(compose.KafkaPassword(principal)) == "" {
			bad("service kafka makes no login for %s: %s is not set", principal, compose.KafkaPassword(principal))
		}
	}
	return errs
}

// reference is ${NAME…} in a compose file.
var reference = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}`)

// checkSecrets: every secret comes from .env, which make up makes, and compose refuses to
// start without it; no password or secret is written in the repository.
func checkSecrets(p *types.Project) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	raw, err := os.ReadFile(p.ComposeFiles[0])
	if err != nil {
		return []error{err}
	}
	secrets := compose.Secrets()
	used := map[string]bool{}
	for _, m := range reference.FindAllStringSubmatch(string(raw), -1) {
		name, modifier := m[1], m[2]
		switch {
		case slices.Contains(secrets, name) && !strings.HasPrefix(modifier, ":?"):
			bad("docker-compose.yml reads %s, a secret, as %s: it must refuse to start without it (${%s:?…})", name, m[0], name)
		case !slices.Contains(secrets, name) && !strings.HasPrefix(modifier, ":-"):
			bad("docker-compose.yml reads %s, which make up does not make (devstack/compose.Secrets) and has no default", name)
		}
		used[name] = true
	}
	for _, name := range secrets {
		if !used[name] {
			bad("make up makes %s, which docker-compose.yml never reads", name)
		}
	}
	// The loader read .env's values as the project's environment.
	isSecret := func(v string) bool {
		return v != "" && slices.ContainsFunc(secrets, func(name string) bool { return p.Environment[name] == v })
	}
	jaas := regexp.MustCompile(`password="([^"]*)"`)
	for name, svc := range p.Services {
		for k, v := range svc.Environment {
			value := ptrOr(v, "")
			var written []string
			switch {
			case k == "DATABASE_URL":
				if u, err := url.Parse(value); err == nil && u.User != nil {
					if pw, ok := u.User.Password(); ok {
						written = append(written, pw)
					}
				}
			case strings.Contains(value, `password="`):
				for _, m := range jaas.FindAllStringSubmatch(value, -1) {
					written = append(written, m[1])
				}
			case (strings.Contains(k, "PASSWORD") || strings.Contains(k, "SECRET")) && value != "":
				// Empty is no secret at all (docker-compose.stripe.yml's webhook secret,
				// off until .env names one), not one written down.
				written = append(written, value)
			}
			for _, pw := range written {
				if !isSecret(pw) {
					bad("service %s: %s holds a password that is not one of .env's secrets: it is written in the repository", name, k)
				}
			}
		}
	}
	return errs
}

// placeholder is a value Keycloak fills from its environment at import: ${NAME}.
var placeholder = regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$`)

// checkRealmSecrets: the realm file holds no password or secret, only placeholders that
// the keycloak service's environment fills.
func checkRealmSecrets(r *realm, kc types.ServiceConfig) []error {
	var errs []error
	check := func(what, value string) {
		m := placeholder.FindStringSubmatch(value)
		switch {
		case m == nil:
			errs = append(errs, fmt.Errorf("realm file: %s is written in the file: make it a placeholder ${NAME} that compose gives keycloak from .env", what))
		case getenv(kc)(m[1]) == "":
			errs = append(errs, fmt.Errorf("realm file names %s, which service keycloak is not given: Keycloak would import it as it stands", value))
		}
	}
	for _, c := range r.Clients {
		if c.Secret != "" {
			check("client "+c.ClientID+"'s secret", c.Secret)
		}
	}
	for _, u := range r.Users {
		for _, c := range u.Credentials {
			check("user "+u.Username+"'s "+c.Type, c.Value)
		}
	}
	return errs
}

// filled is value with Keycloak's placeholders replaced from svc's environment, as
// Keycloak imports it.
func filled(value string, svc types.ServiceConfig) string { return os.Expand(value, getenv(svc)) }
