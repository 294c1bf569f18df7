package imagebuild

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"

	"github.com/orderflow/common-events/services"
	"github.com/orderflow/devstack/compose"
	"github.com/orderflow/devstack/testenv"
)

// goEnv reads one of this machine's go env settings.
func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

// newBuild is a build of root's Dockerfile for one service, with this machine's Go and caches.
func newBuild(t *testing.T, root, dockerfile string, args map[string]string) Build {
	t.Helper()
	if os.Geteuid() != 0 && os.Getenv("CI") == "" {
		t.Skip("replays RUN in a chroot and a mount namespace, which need root (CI runs it as root)")
	}
	if goroot := goEnv(t, "GOROOT"); goroot != "/usr/local/go" {
		t.Fatalf("the replay runs this machine's Go where the golang image has it, /usr/local/go; GOROOT is %s", goroot)
	}
	return Build{
		Context:    root,
		Dockerfile: dockerfile,
		Args:       args,
		Work:       t.TempDir(),
		GoVersion:  goEnv(t, "GOVERSION"),
		GoModCache: goEnv(t, "GOMODCACHE"),
		GoCache:    goEnv(t, "GOCACHE"),
	}
}

// Every image docker-compose.yml builds is replayed from the clean checkout's files: the
// binary its last stage copies must come out, statically linked. A service built as
// another is (a service's kafka-setup one-shot, from the service's image) is the same
// image, replayed once.
func TestComposeImagesBuild(t *testing.T) {
	root := testenv.Root(t)
	env, _, err := compose.Ensure(t.TempDir()) // the secrets make up writes to .env
	if err != nil {
		t.Fatal(err)
	}
	var vars []string
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")}, cli.WithEnv(vars),
		cli.WithWorkingDirectory(root), cli.WithName("orderflow"), cli.WithResolvedPaths(true))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	var built []string
	images := map[string]bool{}
	for _, name := range sortedKeys(p.Services) {
		svc := p.Services[name]
		if svc.Build == nil || images[svc.Image] {
			continue
		}
		images[svc.Image] = true
		built = append(built, name)
		t.Run(name, func(t *testing.T) {
			args := map[string]string{}
			for k, v := range svc.Build.Args {
				if v != nil {
					args[k] = *v
				}
			}
			start := time.Now()
			artifacts, err := Replay(context.Background(), newBuild(t, svc.Build.Context, svc.Build.Dockerfile, args))
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range artifacts {
				t.Logf("%s: %s from stage %s, static, built in %s", name, a.Path, a.Stage, time.Since(start).Round(time.Millisecond))
			}
		})
	}
	if want := services.Names(); !slices.Equal(slices.Sorted(slices.Values(built)), slices.Sorted(slices.Values(want))) {
		t.Errorf("compose builds %v, want the services %v", built, want)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// The proof must fail on each way an image build breaks.
func TestReplayCatchesBreakage(t *testing.T) {
	root := testenv.Root(t)
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	service := map[string]string{"SERVICE": "order-service"}
	tests := []struct {
		name       string
		dockerfile func(string) string // edits the Dockerfile
		file       string              // or replaces it with this one from testdata
		ignore     string              // lines added to .dockerignore
		args       map[string]string
		want       string
	}{
		{name: "a hand-written list of modules that misses one (the Dockerfiles before issue 10)",
			file: "testdata/Dockerfile.listed", want: "cannot load module bench listed in go.work"},
		{name: "a module excluded from the context by .dockerignore",
			ignore: "migrations/\n", args: service, want: "cannot load module migrations listed in go.work"},
		{name: "a path that is not in the context",
			dockerfile: func(s string) string {
				return strings.Replace(s, "COPY . .\nRUN test -f", "COPY schema/ schema/\nCOPY . .\nRUN test -f", 1)
			},
			args: service, want: "schema/: not in the build context"},
		{name: "a dynamically linked binary",
			dockerfile: func(s string) string { return strings.Replace(s, "CGO_ENABLED=0", "CGO_ENABLED=1", 1) },
			args:       service, want: "dynamically linked"},
		{name: "a golang tag that is not this machine's Go",
			dockerfile: func(s string) string { return strings.ReplaceAll(s, "golang:1.26.8-", "golang:1.26.7-") },
			args:       service, want: "is Go 1.26.7, but this machine's Go is"},
		{name: "no service named",
			want: "build with --build-arg SERVICE="},
		{name: "a service that is not there",
			args: map[string]string{"SERVICE": "shipping-service"}, want: "SERVICE=shipping-service is not a service"},
		{name: "a binary the last stage copies but nobody built",
			dockerfile: func(s string) string { return strings.Replace(s, "/out/service /usr", "/out/order-service /usr", 1) },
			args:       service, want: "stage build has no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctxDir, file := root, filepath.Join(root, "Dockerfile")
			switch {
			case tt.file != "":
				file, _ = filepath.Abs(tt.file)
			case tt.dockerfile != nil:
				changed := tt.dockerfile(string(dockerfile))
				if changed == string(dockerfile) {
					t.Fatal("the edit changed nothing: the test is out of date")
				}
				file = filepath.Join(t.TempDir(), "Dockerfile")
				if err := os.WriteFile(file, []byte(changed), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tt.ignore != "" {
				ctxDir = copyCheckout(t, root)
				f, err := os.OpenFile(filepath.Join(ctxDir, ".dockerignore"), os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.WriteString(tt.ignore)
				f.Close()
			}
			_, err := Replay(context.Background(), newBuild(t, ctxDir, file, tt.args))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			t.Logf("caught: %v", err)
		})
	}
}

// copyCheckout copies the files a clone of root holds into a directory of its own.
func copyCheckout(t *testing.T, root string) string {
	t.Helper()
	dir := t.TempDir()
	files, err := contextFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, rel := range files {
		fi, err := os.Lstat(filepath.Join(root, rel))
		if err != nil {
			continue
		}
		if err := copyFile(filepath.Join(root, rel), filepath.Join(dir, rel), fi); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestStatic(t *testing.T) {
	goBin := filepath.Join(goEnv(t, "GOROOT"), "bin", "go") // built with cgo off: static
	if err := Static(goBin); err != nil {
		t.Errorf("%s: %v, want static", goBin, err)
	}
	if err := Static("/bin/sh"); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("/bin/sh: got %v, want dynamically linked", err)
	}
	if err := Static("imagebuild.go"); err != nil {
		t.Errorf("a file that is not ELF: %v, want no error", err)
	}
}
