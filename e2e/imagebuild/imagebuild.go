// Package imagebuild replays a Dockerfile's build stages without Docker, so that an image
// build is proven where no Docker engine runs.
//
// The Dockerfile is read by BuildKit's own parser, the build context is what a clone
// holds less what .dockerignore excludes (read by Docker's own pattern matcher), and each
// stage gets a root of its own: COPY writes into it, RUN runs chrooted into it with this
// machine's /usr (and so its Go at /usr/local/go, where the golang image has it) and /etc
// bound read-only, in a private mount namespace. Nothing else of the workspace is there, as
// in Docker. Stages can only start from golang images (their Go must be this machine's Go)
// or from earlier stages; the last stage is not run — only what it copies from the others
// is checked: it must exist, and an executable must be statically linked.
package imagebuild

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// Build describes one image build, as `docker build` would be given it.
type Build struct {
	Context    string            // the build context directory
	Dockerfile string            // the Dockerfile; relative paths are taken from Context
	Args       map[string]string // --build-arg values
	Work       string            // an empty directory for the context copy and the stage roots
	GoVersion  string            // this machine's `go env GOVERSION`, e.g. go1.26.8
	GoModCache string            // mounted at /go/pkg/mod in every RUN; empty for none
	GoCache    string            // mounted at /root/.cache/go-build in every RUN; empty for none
	Output     io.Writer         // what RUN prints; nil discards it
}

// Artifact is a file the last stage copies from a build stage.
type Artifact struct {
	Stage string // the stage it comes from
	Path  string // its path in that stage
	File  string // where it is on this machine
}

// The golang image's environment (docker inspect golang:1.26.8-bookworm), minus
// GOLANG_VERSION, which is set from the tag.
var golangImageEnv = []string{
	"PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"GOPATH=/go",
	"GOTOOLCHAIN=local",
	"HOME=/root",
}

// What this machine's network needs, passed to RUN when set; not part of the build.
var networkEnv = []string{"GOPROXY", "GOSUMDB", "GONOSUMDB", "GOPRIVATE", "GOINSECURE",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}

type stage struct {
	name string
	root string
	env  []string // ENV, ARG values and the image's environment, in order of precedence last
	wd   string
}

type replay struct {
	b       Build
	lex     *shell.Lex
	context string // the materialised build context
	stages  []*stage
	meta    map[string]string // ARGs declared before the first FROM
}

// Replay runs the build stages the last stage depends on and returns what the last stage
// copies from them. The error says which instruction failed and why.
func Replay(ctx context.Context, b Build) ([]Artifact, error) {
	dockerfile := b.Dockerfile
	if !filepath.IsAbs(dockerfile) {
		dockerfile = filepath.Join(b.Context, dockerfile)
	}
	src, err := os.ReadFile(dockerfile)
	if err != nil {
		return nil, err
	}
	ast, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Dockerfile, err)
	}
	stages, metaArgs, err := instructions.Parse(ast.AST, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Dockerfile, err)
	}
	if len(stages) == 0 {
		return nil, fmt.Errorf("%s has no FROM", b.Dockerfile)
	}
	r := &replay{b: b, lex: shell.NewLex(ast.EscapeToken), meta: map[string]string{}}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if v, ok := b.Args[kv.Key]; ok {
				r.meta[kv.Key] = v
			} else if kv.Value != nil {
				v, _, err := r.lex.ProcessWord(*kv.Value, mapEnv(r.meta))
				if err != nil {
					return nil, err
				}
				r.meta[kv.Key] = v
			}
		}
	}
	if r.context, err = r.materialiseContext(); err != nil {
		return nil, err
	}
	last := len(stages) - 1
	needed := r.needed(stages, last)
	r.stages = make([]*stage, len(stages))
	for i := range stages[:last] {
		if !needed[i] {
			continue
		}
		if err := r.run(ctx, i, stages[i]); err != nil {
			return nil, err
		}
	}
	return r.checkLast(stages[last])
}

// needed marks the stages that stage i builds on, through FROM or COPY --from.
func (r *replay) needed(stages []instructions.Stage, i int) map[int]bool {
	marked := map[int]bool{}
	var mark func(int)
	mark = func(i int) {
		if marked[i] {
			return
		}
		marked[i] = true
		if j, ok := stageIndex(stages[:i], r.expandMeta(stages[i].BaseName)); ok {
			mark(j)
		}
		for _, c := range stages[i].Commands {
			if cp, ok := c.(*instructions.CopyCommand); ok && cp.From != "" {
				if j, ok := stageIndex(stages[:i], cp.From); ok {
					mark(j)
				}
			}
		}
	}
	mark(i)
	return marked
}

func stageIndex(stages []instructions.Stage, name string) (int, bool) {
	for i, s := range stages {
		if strings.EqualFold(s.Name, name) {
			return i, true
		}
	}
	if n, err := strconv.Atoi(name); err == nil && n >= 0 && n < len(stages) {
		return n, true
	}
	return 0, false
}

func (r *replay) expandMeta(word string) string {
	v, _, err := r.lex.ProcessWord(word, mapEnv(r.meta))
	if err != nil {
		return word
	}
	return v
}

// run replays one build stage into a root directory of its own.
func (r *replay) run(ctx context.Context, i int, s instructions.Stage) error {
	where := func(c instructions.Command) string {
		return fmt.Sprintf("%s, stage %s, %s", r.b.Dockerfile, stageName(s, i), c.Name())
	}
	st := &stage{name: stageName(s, i), root: filepath.Join(r.b.Work, fmt.Sprintf("stage-%d", i)), wd: "/"}
	base := r.expandMeta(s.BaseName)
	if from := r.stageByName(base); from != nil {
		if err := copyTree(from.root, st.root); err != nil {
			return err
		}
		st.env, st.wd = slices.Clone(from.env), from.wd
	} else {
		env, wd, err := r.baseImage(base)
		if err != nil {
			return fmt.Errorf("%s, stage %s: %w", r.b.Dockerfile, st.name, err)
		}
		st.env, st.wd = env, wd
		if err := os.MkdirAll(filepath.Join(st.root, wd), 0o755); err != nil {
			return err
		}
	}
	r.stages[i] = st
	for _, c := range s.Commands {
		if e, ok := c.(instructions.SupportsSingleWordExpansion); ok {
			if err := e.Expand(func(w string) (string, error) {
				v, _, err := r.lex.ProcessWord(w, shell.EnvsFromSlice(st.env))
				return v, err
			}); err != nil {
				return fmt.Errorf("%s: %w", where(c), err)
			}
		}
		var err error
		switch c := c.(type) {
		case *instructions.ArgCommand:
			for _, kv := range c.Args {
				v, ok := r.b.Args[kv.Key]
				if !ok && kv.Value != nil {
					v, ok = *kv.Value, true
				}
				if !ok {
					v, ok = r.meta[kv.Key]
				}
				if ok {
					st.env = append(st.env, kv.Key+"="+v)
				}
			}
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				st.env = append(st.env, kv.Key+"="+kv.Value)
			}
		case *instructions.WorkdirCommand:
			st.wd = path.Join(st.wd, c.Path)
			if path.IsAbs(c.Path) {
				st.wd = path.Clean(c.Path)
			}
			err = os.MkdirAll(filepath.Join(st.root, st.wd), 0o755)
		case *instructions.CopyCommand:
			err = r.copy(st, c)
		case *instructions.RunCommand:
			err = r.runCommand(ctx, st, c)
		case *instructions.LabelCommand, *instructions.ExposeCommand, *instructions.EntrypointCommand,
			*instructions.CmdCommand, *instructions.HealthCheckCommand, *instructions.StopSignalCommand,
			*instructions.VolumeCommand:
			// Image metadata: nothing to build.
		default:
			err = errors.New("not replayed: build stages may use FROM, ARG, ENV, WORKDIR, COPY and RUN")
		}
		if err != nil {
			return fmt.Errorf("%s: %w", where(c), err)
		}
	}
	return nil
}

func stageName(s instructions.Stage, i int) string {
	if s.Name != "" {
		return s.Name
	}
	return strconv.Itoa(i)
}

func (r *replay) stageByName(name string) *stage {
	for _, st := range r.stages {
		if st != nil && strings.EqualFold(st.name, name) {
			return st
		}
	}
	return nil
}

// baseImage is the environment and working directory of a golang image whose Go is this
// machine's Go; any other image cannot be replayed here.
func (r *replay) baseImage(image string) (env []string, wd string, err error) {
	repo, tag, _ := strings.Cut(image, ":")
	if repo != "golang" && repo != "docker.io/library/golang" && repo != "library/golang" {
		return nil, "", fmt.Errorf("FROM %s: only golang images can be replayed here", image)
	}
	version, _, _ := strings.Cut(tag, "-")
	if strings.Count(version, ".") != 2 {
		return nil, "", fmt.Errorf("FROM %s: name the exact Go release (as golang:1.26.8-bookworm does)", image)
	}
	if "go"+version != r.b.GoVersion {
		return nil, "", fmt.Errorf("FROM %s is Go %s, but this machine's Go is %s: move the tag with the toolchain",
			image, version, strings.TrimPrefix(r.b.GoVersion, "go"))
	}
	return append(slices.Clone(golangImageEnv), "GOLANG_VERSION="+version), "/go", nil
}

// copy replays COPY: from the build context, or from an earlier stage with --from.
func (r *replay) copy(st *stage, c *instructions.CopyCommand) error {
	if c.Parents || len(c.ExcludePatterns) > 0 || len(c.SourceContents) > 0 {
		return errors.New("--parents, --exclude and here-documents are not replayed")
	}
	srcRoot, fromContext := r.context, true
	if c.From != "" {
		from := r.stageByName(c.From)
		if from == nil {
			return fmt.Errorf("--from=%s: not an earlier stage (images cannot be replayed)", c.From)
		}
		srcRoot, fromContext = from.root, false
	}
	dest := c.DestPath
	if !path.IsAbs(dest) {
		dest = path.Join(st.wd, dest) + map[bool]string{true: "/"}[strings.HasSuffix(c.DestPath, "/") || c.DestPath == "."]
	}
	var sources []string
	for _, p := range c.SourcePaths {
		if !fromContext && !path.IsAbs(p) {
			p = "/" + p
		}
		matches, err := filepath.Glob(filepath.Join(srcRoot, filepath.FromSlash(path.Clean("/"+p))))
		if err != nil {
			return err
		}
		if len(matches) == 0 {
			if fromContext {
				return fmt.Errorf("%s: not in the build context (or excluded by .dockerignore)", p)
			}
			return fmt.Errorf("%s: not in stage %s", p, c.From)
		}
		sources = append(sources, matches...)
	}
	destDir := strings.HasSuffix(dest, "/") || len(sources) > 1
	destPath := filepath.Join(st.root, filepath.FromSlash(dest))
	if fi, err := os.Stat(destPath); err == nil && fi.IsDir() {
		destDir = true
	}
	for _, s := range sources {
		fi, err := os.Lstat(s)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			err = copyTree(s, destPath)
		case destDir:
			err = copyFile(s, filepath.Join(destPath, filepath.Base(s)), fi)
		default:
			err = copyFile(s, destPath, fi)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// runCommand replays RUN: chrooted into the stage's root, with /usr, /etc, /dev and /proc of
// this machine bound into it, in a mount namespace that ends with the command.
func (r *replay) runCommand(ctx context.Context, st *stage, c *instructions.RunCommand) error {
	if len(c.FlagsUsed) > 0 || len(c.Files) > 0 {
		return errors.New("RUN flags and here-documents are not replayed")
	}
	argv := c.CmdLine
	if c.PrependShell {
		argv = []string{"/bin/sh", "-c", strings.Join(c.CmdLine, " ")}
	}
	const script = `set -e
root=$1 wd=$2 modcache=$3 gocache=$4; shift 4
for d in usr etc dev proc tmp go/pkg/mod root/.cache/go-build; do mkdir -p "$root/$d"; done
chmod 1777 "$root/tmp"
for l in bin lib lib64 sbin; do [ -e "$root/$l" ] || [ -L "$root/$l" ] || ln -s "usr/$l" "$root/$l"; done
for d in usr etc; do mount --rbind "/$d" "$root/$d"; mount -o remount,bind,ro "$root/$d"; done
mount --rbind /dev "$root/dev"
mount --rbind /proc "$root/proc"
[ -z "$modcache" ] || mount --bind "$modcache" "$root/go/pkg/mod"
[ -z "$gocache" ] || mount --bind "$gocache" "$root/root/.cache/go-build"
exec chroot "$root" /bin/sh -c 'cd "$0" && exec "$@"' "$wd" "$@"`
	args := append([]string{"--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh",
		st.root, st.wd, r.b.GoModCache, r.b.GoCache}, argv...)
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.Env = slices.Clone(st.env)
	for _, k := range networkEnv {
		if v, ok := os.LookupEnv(k); ok {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	var tail tailBuffer
	cmd.Stdout = io.MultiWriter(output(r.b.Output), &tail)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(c.CmdLine, " "), err, tail.String())
	}
	return nil
}

// checkLast checks what the last stage copies from the build stages: each file exists, and
// each executable is statically linked.
func (r *replay) checkLast(s instructions.Stage) ([]Artifact, error) {
	env := mapEnv(r.meta)
	var out []Artifact
	for _, c := range s.Commands {
		if a, ok := c.(*instructions.ArgCommand); ok {
			for _, kv := range a.Args {
				if v, ok := r.b.Args[kv.Key]; ok {
					env[kv.Key] = v
				} else if kv.Value != nil {
					env[kv.Key] = *kv.Value
				}
			}
		}
		cp, ok := c.(*instructions.CopyCommand)
		if !ok || cp.From == "" {
			continue
		}
		if err := cp.Expand(func(w string) (string, error) {
			v, _, err := r.lex.ProcessWord(w, env)
			return v, err
		}); err != nil {
			return nil, err
		}
		from := r.stageByName(cp.From)
		if from == nil {
			return nil, fmt.Errorf("%s, last stage: COPY --from=%s: not a build stage", r.b.Dockerfile, cp.From)
		}
		for _, p := range cp.SourcePaths {
			file := filepath.Join(from.root, filepath.FromSlash(path.Clean("/"+p)))
			fi, err := os.Stat(file)
			if err != nil {
				return nil, fmt.Errorf("%s, last stage: COPY --from=%s %s: stage %s has no such file", r.b.Dockerfile, cp.From, p, cp.From)
			}
			if fi.Mode().IsRegular() {
				if err := Static(file); err != nil {
					return nil, fmt.Errorf("%s, last stage: COPY --from=%s %s: %w", r.b.Dockerfile, cp.From, p, err)
				}
			}
			out = append(out, Artifact{Stage: from.name, Path: p, File: file})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: the last stage copies nothing from a build stage", r.b.Dockerfile)
	}
	return out, nil
}

// Static returns an error if file is an ELF executable that needs a dynamic loader or
// shared libraries (it would not run on Alpine's musl, or at all on a scratch image).
// Files that are not ELF are not executables and pass.
func Static(file string) error {
	f, err := elf.Open(file)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) {
			return nil
		}
		return err
	}
	defer f.Close()
	var why []string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp, _ := io.ReadAll(p.Open())
			why = append(why, "interpreter "+strings.TrimRight(string(interp), "\x00"))
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		why = append(why, "needs "+strings.Join(libs, ", "))
	}
	if len(why) > 0 {
		return fmt.Errorf("dynamically linked (%s)", strings.Join(why, "; "))
	}
	return nil
}

// materialiseContext copies the build context Docker would send: the files a clone holds
// (git's tracked and not-ignored files, or every file outside a git checkout), less those
// .dockerignore excludes.
func (r *replay) materialiseContext() (string, error) {
	files, err := contextFiles(r.b.Context)
	if err != nil {
		return "", err
	}
	var patterns []string
	if f, err := os.Open(filepath.Join(r.b.Context, ".dockerignore")); err == nil {
		patterns, err = ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf(".dockerignore: %w", err)
		}
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return "", fmt.Errorf(".dockerignore: %w", err)
	}
	dir := filepath.Join(r.b.Work, "context")
	for _, rel := range files {
		excluded, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			return "", err
		}
		if excluded {
			continue
		}
		src := filepath.Join(r.b.Context, rel)
		fi, err := os.Lstat(src)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the working tree, not yet in git's index
		} else if err != nil {
			return "", err
		}
		if err := copyFile(src, filepath.Join(dir, rel), fi); err != nil {
			return "", err
		}
	}
	return dir, os.MkdirAll(dir, 0o755)
}

func contextFiles(dir string) ([]string, error) {
	if out, err := exec.Command("git", "-C", dir, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output(); err == nil {
		var files []string
		for _, f := range strings.Split(string(out), "\x00") {
			if f != "" {
				files = append(files, filepath.FromSlash(f))
			}
		}
		return files, nil
	}
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		files = append(files, rel)
		return err
	})
	return files, err
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(target, fi.Mode().Perm()|0o700)
		}
		return copyFile(p, target, fi)
	})
}

func copyFile(src, dst string, fi fs.FileInfo) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		os.Remove(dst)
		return os.Symlink(target, dst)
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

type mapEnv map[string]string

func (m mapEnv) Get(k string) (string, bool) { v, ok := m[k]; return v, ok }
func (m mapEnv) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

func output(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// tailBuffer keeps the last lines a command printed, for the error.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return strings.TrimSpace(string(t.b)) }
