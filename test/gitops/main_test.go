// Package gitops runs the GitOps loop a platform team runs, with a real ArgoCD: the sample in
// config/samples/gitops in a local Git repository, ArgoCD's application controller and repo server
// (built by `make bins` from test/tools/argocd) syncing it into the local test cluster, and the
// AgentFleet operator and the real KubeRay operator acting on what ArgoCD applies. It drives ArgoCD
// through its CRDs and processes only, so this module needs no argo-cd Go packages.
package gitops

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/test/cluster"
)

var (
	c    *cluster.Cluster
	k8s  client.Client
	repo string // the repository root (this checkout)
	git  *gitRepo
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "gitops:", err); return 1 }

	var err error
	if repo, err = cluster.RepoPath("."); err != nil {
		return fail(err)
	}
	binDir := filepath.Join(repo, "bin")
	if d := os.Getenv("AGENTFLEET_BIN_DIR"); d != "" {
		binDir = d
	}
	if err := needTools(binDir); err != nil {
		return fail(err)
	}
	argoCRDs, err := argoCDCRDs(repo)
	if err != nil {
		return fail(err)
	}
	c, err = cluster.Start(ctx, cluster.Options{
		BinDir: binDir,
		CRDDirectoryPaths: append(argoCRDs,
			filepath.Join(repo, "config", "crd", "bases"),
			filepath.Join(repo, "test", "gitops", "testdata", "crds")),
		// prod's 8 workers with one H100 each, the vector DB and the Ray heads on CPU nodes.
		Nodes: append(cluster.GPUNodes("h100", 2, 8, "NVIDIA-H100-80GB-HBM3"),
			cluster.Node{Name: "cpu-0", CPU: "512", Memory: "4Ti"}),
		Progress: os.Stdout,
	})
	if err != nil {
		return fail(err)
	}
	code := 1
	defer func() {
		cancel() // stops playing ESO before the API server goes
		c.Finish(code)
	}()
	scheme := cluster.Scheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return fail(err)
	}
	if k8s, err = client.New(c.Config, client.Options{Scheme: scheme}); err != nil {
		return fail(err)
	}
	manager, err := c.BuildOperator(ctx)
	if err != nil {
		return fail(err)
	}
	if err := c.StartOperator(ctx, "agentfleet-operator", manager); err != nil {
		return fail(err)
	}
	if _, err := c.ApplyFiles(ctx, filepath.Join(repo, "config", "policy")); err != nil {
		return fail(fmt.Errorf("applying config/policy: %w", err))
	}
	if git, err = newGitRepo(filepath.Join(c.Dir, "gitops.git"), filepath.Join(repo, "config", "samples", "gitops")); err != nil {
		return fail(err)
	}
	go playExternalSecrets(ctx, k8s, func(f string, a ...any) { fmt.Printf(f+"\n", a...) })
	if err := startArgoCD(ctx, c, repo, binDir); err != nil {
		return fail(err)
	}
	code = m.Run()
	return code
}

func needCluster(t *testing.T) {
	t.Helper()
	if c == nil {
		t.Skip("needs the local cluster and ArgoCD (not started in -short mode)")
	}
}

// gitRepo is the team's Git repository: config/samples/gitops at the same path as in this one.
type gitRepo struct{ dir string }

const samplePath = "config/samples/gitops"

func newGitRepo(dir, sample string) (*gitRepo, error) {
	g := &gitRepo{dir: dir}
	if err := os.CopyFS(filepath.Join(dir, samplePath), os.DirFS(sample)); err != nil {
		return nil, fmt.Errorf("copying the sample into the test's Git repository: %w", err)
	}
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"},
		{"add", "-A"},
		{"commit", "-q", "-m", "The GitOps sample"},
	} {
		if _, err := g.run(args...); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// URL is what an Application's repoURL says.
func (g *gitRepo) URL() string { return "file://" + g.dir }

func (g *gitRepo) run(args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = g.dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=platform", "GIT_AUTHOR_EMAIL=platform@example.com",
		"GIT_COMMITTER_NAME=platform", "GIT_COMMITTER_EMAIL=platform@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// commit writes files (paths relative to the sample) and commits them; it returns the new revision.
func (g *gitRepo) commit(t *testing.T, msg string, files map[string]string) string {
	t.Helper()
	for path, content := range files {
		if err := os.WriteFile(filepath.Join(g.dir, samplePath, path), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.run("commit", "-q", "-a", "-m", msg); err != nil {
		t.Fatal(err)
	}
	return g.head(t)
}

// revert reverts a commit, as `git revert` does, and returns the new revision.
func (g *gitRepo) revert(t *testing.T, rev string) string {
	t.Helper()
	if _, err := g.run("revert", "--no-edit", rev); err != nil {
		t.Fatal(err)
	}
	return g.head(t)
}

func (g *gitRepo) head(t *testing.T) string {
	t.Helper()
	rev, err := g.run("rev-parse", "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func (g *gitRepo) read(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(g.dir, samplePath, path))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
