package e2e

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/agentfleet/agentfleet/test/cluster"
)

// The operator holds no verb it does not use: the e2e suite runs it as a ServiceAccount bound to
// exactly config/rbac/role.yaml (leastprivilege_test.go), the API server audits that
// ServiceAccount's requests, and after the whole suite every verb the role grants must appear in
// the audit log, or in notExercised with the reason it is kept.

// operatorUser is the operator's ServiceAccount as the API server names its requests.
var operatorUser = fmt.Sprintf("system:serviceaccount:%s:%s", operatorNamespace, operatorServiceAccount)

// grant is one verb on one resource ("resource" or "resource/subresource") of an API group ("" is
// the core group), as RBAC and the audit log name it.
type grant struct{ Group, Resource, Verb string }

func (g grant) String() string {
	group := g.Group
	if group == "" {
		group = "core"
	}
	return group + " " + g.Resource + " " + g.Verb
}

// notExercised are the verbs the operator needs that the e2e suite does not make it use, and why
// each is kept.
var notExercised = map[grant]string{
	// dependsOn names any kind; the role lets fleets depend on apps/v1's workloads out of the box.
	{"apps", "daemonsets", "get"}:    "a fleet may depend on a DaemonSet; the e2e fleets depend on a Deployment and a StatefulSet",
	{"apps", "daemonsets", "list"}:   "a fleet may depend on a DaemonSet (watched once seen)",
	{"apps", "daemonsets", "watch"}:  "a fleet may depend on a DaemonSet (watched once seen)",
	{"apps", "replicasets", "get"}:   "a fleet may depend on a ReplicaSet; the e2e fleets depend on a Deployment and a StatefulSet",
	{"apps", "replicasets", "list"}:  "a fleet may depend on a ReplicaSet (watched once seen)",
	{"apps", "replicasets", "watch"}: "a fleet may depend on a ReplicaSet (watched once seen)",
	// The e2e operator runs without --leader-elect (the chart turns it on).
	{"coordination.k8s.io", "leases", "get"}:    "leader election; and the agents' Role grants it, which RBAC allows only to one who holds it",
	{"coordination.k8s.io", "leases", "create"}: "leader election; and the agents' Role grants it, which RBAC allows only to one who holds it",
	{"coordination.k8s.io", "leases", "update"}: "leader election; and the agents' Role grants it, which RBAC allows only to one who holds it",
	// controllers/fleet/access.go.
	{"", "serviceaccounts", "update"}:                       "puts back an agents' ServiceAccount changed by hand; no e2e test changes one",
	{"rbac.authorization.k8s.io", "roles", "update"}:        "puts back an agents' Role changed by hand; no e2e test changes one",
	{"rbac.authorization.k8s.io", "rolebindings", "update"}: "puts back an agents' RoleBinding changed by hand; no e2e test changes one",
	{"", "serviceaccounts", "delete"}:                       "a fleet that turns heartbeats off loses its agents' access; no e2e test turns them off",
	{"rbac.authorization.k8s.io", "roles", "delete"}:        "a fleet that turns heartbeats off loses its agents' access; no e2e test turns them off",
	{"rbac.authorization.k8s.io", "rolebindings", "delete"}: "a fleet that turns heartbeats off loses its agents' access; no e2e test turns them off",
	// controllers/fleet/stranded.go.
	{"", "pods", "delete"}: "force-deletes workers stranded on a node that is not Ready; the chaos suite's NotReady node does it (make test-chaos)",
	// controllers/fleet/jobs.go.
	{"ray.io", "rayjobs", "delete"}: "RayJobs past a job's history (3 finished runs) or of a job no longer declared are deleted; no e2e job gets there",
}

// withListsOfWatches counts a list wherever used has a watch: informers list through a watch
// (client-go's WatchListClient, on by default since 1.35), but fall back to a list against an API
// server without streaming lists, or when the stream fails.
func withListsOfWatches(used map[grant]int) map[grant]int {
	out := maps.Clone(used)
	for g, n := range used {
		if g.Verb == "watch" {
			out[grant{g.Group, g.Resource, "list"}] += n
		}
	}
	return out
}

// grantsOf is every verb rules grant, one by one. A wildcard, a resourceNames restriction or a
// non-resource URL cannot be checked against an audit log: the role must have none.
func grantsOf(rules []rbacv1.PolicyRule) (map[grant]bool, error) {
	out := map[grant]bool{}
	for _, r := range rules {
		if len(r.NonResourceURLs) > 0 || len(r.ResourceNames) > 0 {
			return nil, fmt.Errorf("rule %v: nonResourceURLs and resourceNames are not checked", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if g == "*" || res == "*" || v == "*" {
						return nil, fmt.Errorf("rule %v: a wildcard grants verbs nobody listed", r)
					}
					out[grant{g, res, v}] = true
				}
			}
		}
	}
	return out, nil
}

// auditEvent is what of an audit.k8s.io/v1 Event this needs.
type auditEvent struct {
	Verb string `json:"verb"`
	User struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		APIGroup    string `json:"apiGroup"`
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// usedGrants reads an audit log (JSON lines) and counts the requests of user by the grant they
// needed: used, those the API server authorized, and refused, those it did not (403).
func usedGrants(r io.Reader, user string) (used, refused map[grant]int, err error) {
	used, refused = map[grant]int{}, map[grant]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for line := 1; sc.Scan(); line++ {
		var e auditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, nil, fmt.Errorf("audit log line %d: %w", line, err)
		}
		if e.User.Username != user || e.ObjectRef == nil || e.ObjectRef.Resource == "" {
			continue // another user, or a non-resource request (discovery, /healthz)
		}
		g := grant{e.ObjectRef.APIGroup, e.ObjectRef.Resource, e.Verb}
		if e.ObjectRef.Subresource != "" {
			g.Resource += "/" + e.ObjectRef.Subresource
		}
		if e.ResponseStatus != nil && e.ResponseStatus.Code == 403 {
			refused[g]++
		} else {
			used[g]++
		}
	}
	return used, refused, sc.Err()
}

// unusedGrants are the granted verbs never used and not explained in allowed, sorted.
func unusedGrants(granted map[grant]bool, used map[grant]int, allowed map[grant]string) []grant {
	var out []grant
	for g := range granted {
		if used[g] == 0 && allowed[g] == "" {
			out = append(out, g)
		}
	}
	slices.SortFunc(out, func(a, b grant) int { return strings.Compare(a.String(), b.String()) })
	return out
}

func sortedGrants[V any](m map[grant]V) []grant {
	out := make([]grant, 0, len(m))
	for g := range m {
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b grant) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// fullSuite says whether this run is the whole suite: no -test.run or -test.skip narrowed it.
func fullSuite() bool {
	for _, name := range []string{"test.run", "test.skip"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return false
		}
	}
	return true
}

// checkOperatorGrantsUsed compares what the operator used, per the audit log at auditPath, with
// what config/rbac/role.yaml grants it; it prints both and returns an error listing each granted
// verb never used and not in notExercised.
func checkOperatorGrantsUsed(auditPath string, out io.Writer) error {
	rolePath, err := cluster.RepoPath("config/rbac/role.yaml")
	if err != nil {
		return err
	}
	data, err := os.ReadFile(rolePath)
	if err != nil {
		return err
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(data, role); err != nil {
		return fmt.Errorf("decoding %s: %w", rolePath, err)
	}
	granted, err := grantsOf(role.Rules)
	if err != nil {
		return fmt.Errorf("%s: %w", rolePath, err)
	}
	f, err := os.Open(auditPath)
	if err != nil {
		return fmt.Errorf("the operator's audit log: %w", err)
	}
	defer f.Close()
	used, refused, err := usedGrants(f, operatorUser)
	if err != nil {
		return fmt.Errorf("%s: %w", auditPath, err)
	}
	fmt.Fprintf(out, "The operator's requests in the e2e suite, by the grant they used (%s):\n", auditPath)
	for _, g := range sortedGrants(used) {
		note := ""
		if !granted[g] {
			note = " (not in the role: allowed by another binding)"
		}
		fmt.Fprintf(out, "  %-55s %7d%s\n", g, used[g], note)
	}
	for _, g := range sortedGrants(refused) {
		fmt.Fprintf(out, "  refused: %-46s %7d\n", g, refused[g])
	}
	for _, g := range sortedGrants(notExercised) {
		if used[g] > 0 {
			// A test that starts to exercise it is welcome: say so, fail nothing.
			fmt.Fprintf(out, "  %s is used now: take it out of notExercised in test/e2e/rbacusage_test.go\n", g)
		}
		if !granted[g] {
			return fmt.Errorf("%s is in notExercised but %s does not grant it", g, rolePath)
		}
	}
	if unused := unusedGrants(granted, withListsOfWatches(used), notExercised); len(unused) > 0 {
		var b strings.Builder
		for _, g := range unused {
			fmt.Fprintf(&b, "\n  %s", g)
		}
		return fmt.Errorf("%s grants the operator verbs it never used in the whole e2e suite (drop them from the +kubebuilder:rbac markers, "+
			"or cover them with a test, or add them to notExercised in test/e2e/rbacusage_test.go with the reason):%s", rolePath, b.String())
	}
	return nil
}

func TestGrantsOf(t *testing.T) {
	got, err := grantsOf([]rbacv1.PolicyRule{
		{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		{APIGroups: []string{"agentfleet.dev"}, Resources: []string{"agentfleets/status"}, Verbs: []string{"update"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[grant]bool{
		{"", "events", "create"}: true, {"", "events", "patch"}: true,
		{"events.k8s.io", "events", "create"}: true, {"events.k8s.io", "events", "patch"}: true,
		{"agentfleet.dev", "agentfleets/status", "update"}: true,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("grantsOf (-want +got):\n%s", diff)
	}
	for name, r := range map[string]rbacv1.PolicyRule{
		"a verb wildcard":  {APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"*"}},
		"a group wildcard": {APIGroups: []string{"*"}, Resources: []string{"pods"}, Verbs: []string{"get"}},
		"resource names":   {APIGroups: []string{""}, Resources: []string{"pods"}, ResourceNames: []string{"a"}, Verbs: []string{"get"}},
		"a URL":            {NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}},
	} {
		if _, err := grantsOf([]rbacv1.PolicyRule{r}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestUsedGrants(t *testing.T) {
	const op = "system:serviceaccount:agentfleet-system:agentfleet-operator"
	log := strings.Join([]string{
		`{"kind":"Event","verb":"list","user":{"username":"` + op + `"},"objectRef":{"resource":"pods","apiVersion":"v1"},"responseStatus":{"code":200}}`,
		`{"kind":"Event","verb":"watch","user":{"username":"` + op + `"},"objectRef":{"resource":"pods","apiVersion":"v1"},"responseStatus":{"code":200}}`,
		`{"kind":"Event","verb":"watch","user":{"username":"` + op + `"},"objectRef":{"resource":"pods","apiVersion":"v1"}}`,
		`{"kind":"Event","verb":"patch","user":{"username":"` + op + `"},"objectRef":{"resource":"agentfleets","subresource":"status","apiGroup":"agentfleet.dev"},"responseStatus":{"code":409}}`,
		`{"kind":"Event","verb":"get","user":{"username":"` + op + `"},"objectRef":{"resource":"leases","apiGroup":"coordination.k8s.io"},"responseStatus":{"code":404}}`,
		`{"kind":"Event","verb":"delete","user":{"username":"` + op + `"},"objectRef":{"resource":"pods"},"responseStatus":{"code":403}}`,
		`{"kind":"Event","verb":"get","user":{"username":"` + op + `"},"requestURI":"/api","responseStatus":{"code":200}}`,
		`{"kind":"Event","verb":"delete","user":{"username":"someone-else"},"objectRef":{"resource":"secrets"},"responseStatus":{"code":200}}`,
	}, "\n")
	used, refused, err := usedGrants(strings.NewReader(log), op)
	if err != nil {
		t.Fatal(err)
	}
	wantUsed := map[grant]int{
		{"", "pods", "list"}: 1, {"", "pods", "watch"}: 2,
		{"agentfleet.dev", "agentfleets/status", "patch"}: 1, // a conflict still needed the grant
		{"coordination.k8s.io", "leases", "get"}:          1,
	}
	if diff := cmp.Diff(wantUsed, used); diff != "" {
		t.Errorf("used (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[grant]int{{"", "pods", "delete"}: 1}, refused); diff != "" {
		t.Errorf("refused (-want +got):\n%s", diff)
	}
	if _, _, err := usedGrants(strings.NewReader("{not json"), op); err == nil {
		t.Error("a corrupt audit log: no error")
	}
}

func TestWithListsOfWatches(t *testing.T) {
	used := map[grant]int{{"", "pods", "watch"}: 2, {"", "pods", "list"}: 1, {"ray.io", "rayclusters", "watch"}: 1, {"", "secrets", "get"}: 4}
	want := map[grant]int{{"", "pods", "watch"}: 2, {"", "pods", "list"}: 3, {"ray.io", "rayclusters", "watch"}: 1, {"ray.io", "rayclusters", "list"}: 1, {"", "secrets", "get"}: 4}
	if diff := cmp.Diff(want, withListsOfWatches(used)); diff != "" {
		t.Errorf("withListsOfWatches (-want +got):\n%s", diff)
	}
}

func TestUnusedGrants(t *testing.T) {
	granted := map[grant]bool{{"", "pods", "get"}: true, {"", "pods", "delete"}: true, {"ray.io", "rayjobs", "delete"}: true, {"", "nodes", "update"}: true}
	used := map[grant]int{{"", "pods", "get"}: 3, {"", "secrets", "get"}: 1}
	allowed := map[grant]string{{"ray.io", "rayjobs", "delete"}: "a reason"}
	want := []grant{{"", "nodes", "update"}, {"", "pods", "delete"}}
	if diff := cmp.Diff(want, unusedGrants(granted, used, allowed)); diff != "" {
		t.Errorf("unusedGrants (-want +got):\n%s", diff)
	}
}
