package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
)

// Output formats of agentfleet status; "" is the table.
const (
	statusWide = "wide"
	statusJSON = "json"
	statusYAML = "yaml"
)

// StatusOptions as parsed by the dispatcher.
type StatusOptions struct {
	Namespace     string // "" with AllNamespaces false means the kubeconfig's namespace, already resolved by the caller
	AllNamespaces bool
	Name          string // optional: one fleet
	Output        string // "" (table, kubectl get style), "wide", "json", "yaml"
}

// Status prints the AgentFleets o selects to w: a table like kubectl get, or a JSON or YAML summary.
func Status(ctx context.Context, c client.Reader, o StatusOptions, w io.Writer) error {
	return status(ctx, c, o, w, time.Now())
}

// status is Status with the clock passed in, so that AGE is deterministic in tests.
func status(ctx context.Context, c client.Reader, o StatusOptions, w io.Writer, now time.Time) error {
	switch o.Output {
	case "", statusWide, statusJSON, statusYAML:
	default:
		return fmt.Errorf("unknown output format %q: accepted are wide, json and yaml, or none for the table", o.Output)
	}
	if o.Name != "" && o.AllNamespaces {
		// As kubectl: a name is only unique within a namespace.
		return fmt.Errorf("agentfleet %q: a fleet cannot be named across all namespaces: drop --all-namespaces or give --namespace", o.Name)
	}

	fleets, err := fetchFleets(ctx, c, o)
	if err != nil {
		return err
	}

	switch o.Output {
	case statusJSON, statusYAML:
		var v any
		if o.Name != "" {
			v = summarize(&fleets[0])
		} else {
			items := make([]FleetSummary, 0, len(fleets))
			for i := range fleets {
				items = append(items, summarize(&fleets[i]))
			}
			v = FleetSummaryList{Items: items}
		}
		return encode(w, o.Output, v)
	}

	if len(fleets) == 0 {
		// kubectl prints this to stderr; here it is the whole answer, so it goes where the table would.
		if o.AllNamespaces {
			_, err = fmt.Fprintln(w, "No agent fleets found.")
		} else {
			_, err = fmt.Fprintf(w, "No agent fleets found in namespace %s.\n", o.Namespace)
		}
		return err
	}
	return printTable(w, fleets, o, now)
}

// fetchFleets gets the one fleet o names, or lists the fleets of o's namespace (or all), sorted by
// namespace and name.
func fetchFleets(ctx context.Context, c client.Reader, o StatusOptions) ([]v1alpha1.AgentFleet, error) {
	if o.Name != "" {
		var f v1alpha1.AgentFleet
		if err := c.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: o.Name}, &f); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("agentfleet %q not found in namespace %q", o.Name, o.Namespace)
			}
			return nil, fmt.Errorf("getting agentfleet %s/%s: %w", o.Namespace, o.Name, crdHint(err))
		}
		return []v1alpha1.AgentFleet{f}, nil
	}

	var list v1alpha1.AgentFleetList
	var opts []client.ListOption
	where := "all namespaces"
	if !o.AllNamespaces {
		opts = append(opts, client.InNamespace(o.Namespace))
		where = fmt.Sprintf("namespace %q", o.Namespace)
	}
	if err := c.List(ctx, &list, opts...); err != nil {
		return nil, fmt.Errorf("listing agentfleets in %s: %w", where, crdHint(err))
	}
	slices.SortFunc(list.Items, func(a, b v1alpha1.AgentFleet) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return list.Items, nil
}

// crdHint says what a "no matches for kind" error most likely means: the CRD is not installed in
// the cluster the kubeconfig points at.
func crdHint(err error) error {
	if meta.IsNoMatchError(err) {
		return fmt.Errorf("is the AgentFleet CRD installed in this cluster? %w", err)
	}
	return err
}

// FleetSummary is what `agentfleet status -o json|yaml` prints per fleet: a stable subset of the
// AgentFleet, not the whole object. Every field is always present, so scripts need no defaults.
type FleetSummary struct {
	Namespace    string             `json:"namespace"`
	Name         string             `json:"name"`
	Phase        string             `json:"phase"`
	Workers      WorkersSummary     `json:"workers"`
	Restarts     RestartsSummary    `json:"restarts"`
	GPUs         GPUsSummary        `json:"gpus"`
	PromptHash   string             `json:"promptHash"`
	ModelVersion string             `json:"modelVersion"`
	DashboardURL string             `json:"dashboardURL"`
	Conditions   []ConditionSummary `json:"conditions"`
}

// WorkersSummary: desired is spec.replicas (defaulted), ready and updated are observed.
type WorkersSummary struct {
	Desired int32 `json:"desired"`
	Ready   int32 `json:"ready"`
	Updated int32 `json:"updated"`
}

// RestartsSummary counts worker replacements by reason, and in all.
type RestartsSummary struct {
	Crashed      int32 `json:"crashed"`
	Stalled      int32 `json:"stalled"`
	Looping      int32 `json:"looping"`
	GPUUnhealthy int32 `json:"gpuUnhealthy"`
	Total        int32 `json:"total"`
}

// GPUsSummary is status.gpus.
type GPUsSummary struct {
	Requested int32  `json:"requested"`
	Allocated int32  `json:"allocated"`
	Product   string `json:"product"`
}

// ConditionSummary is a status condition without its timestamps and generation.
type ConditionSummary struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// FleetSummaryList is the -o json|yaml output of a listing.
type FleetSummaryList struct {
	Items []FleetSummary `json:"items"`
}

func summarize(f *v1alpha1.AgentFleet) FleetSummary {
	r := f.Status.Restarts
	conds := make([]ConditionSummary, 0, len(f.Status.Conditions))
	for _, c := range f.Status.Conditions {
		conds = append(conds, ConditionSummary{Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message})
	}
	return FleetSummary{
		Namespace: f.Namespace,
		Name:      f.Name,
		Phase:     string(phase(f)),
		Workers: WorkersSummary{
			Desired: f.WorkerReplicas(),
			Ready:   f.Status.ReadyReplicas,
			Updated: f.Status.UpdatedReplicas,
		},
		Restarts: RestartsSummary{
			Crashed:      r.Crashed,
			Stalled:      r.Stalled,
			Looping:      r.Looping,
			GPUUnhealthy: r.GPUUnhealthy,
			Total:        r.Crashed + r.Stalled + r.Looping + r.GPUUnhealthy,
		},
		GPUs: GPUsSummary{
			Requested: f.Status.GPUs.Requested,
			Allocated: f.Status.GPUs.Allocated,
			Product:   f.Status.GPUs.Product,
		},
		PromptHash:   f.Status.PromptHash,
		ModelVersion: f.Status.ModelVersion,
		DashboardURL: f.Status.DashboardURL,
		Conditions:   conds,
	}
}

// phase is status.phase, or Pending while the operator has written none (a fleet just created, or
// no operator running): Pending is also what the operator itself reports when no condition says
// more, and it keeps the column and the JSON field within the CRD's phase enum.
func phase(f *v1alpha1.AgentFleet) v1alpha1.Phase {
	if f.Status.Phase == "" {
		return v1alpha1.PhasePending
	}
	return f.Status.Phase
}

func encode(w io.Writer, format string, v any) error {
	var out []byte
	var err error
	if format == statusJSON {
		out, err = json.MarshalIndent(v, "", "    ")
		out = append(out, '\n')
	} else {
		out, err = yaml.Marshal(v)
	}
	if err != nil {
		return fmt.Errorf("encoding status as %s: %w", format, err)
	}
	_, err = w.Write(out)
	return err
}

func printTable(w io.Writer, fleets []v1alpha1.AgentFleet, o StatusOptions, now time.Time) error {
	// kubectl's own tabwriter settings (cli-runtime printers.GetNewTabWriter).
	tw := tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
	header := []string{"NAME", "PHASE", "WORKERS", "UPDATED", "RESTARTS", "GPUS", "PROMPT", "AGE"}
	if o.AllNamespaces {
		header = append([]string{"NAMESPACE"}, header...)
	}
	if o.Output == statusWide {
		header = append(header, "MODEL", "DASHBOARD", "REASON")
	}
	rows := [][]string{header}
	for i := range fleets {
		f := &fleets[i]
		row := []string{
			f.Name,
			string(phase(f)),
			fmt.Sprintf("%d/%d", f.Status.ReadyReplicas, f.WorkerReplicas()),
			strconv.Itoa(int(f.Status.UpdatedReplicas)),
			restartsCell(f.Status.Restarts),
			gpusCell(f.Status.GPUs),
			orDash(prefix(f.Status.PromptHash, 12)),
			age(f.CreationTimestamp, now),
		}
		if o.AllNamespaces {
			row = append([]string{f.Namespace}, row...)
		}
		if o.Output == statusWide {
			row = append(row,
				f.Spec.Model.Name+":"+f.Spec.Model.Version,
				orDash(f.Status.DashboardURL),
				orDash(reason(f.Status.Conditions)))
		}
		rows = append(rows, row)
	}
	for _, row := range rows {
		if _, err := fmt.Fprintln(tw, strings.Join(row, "\t")); err != nil {
			return err
		}
	}
	return tw.Flush()
}

// restartsCell is the total, then the reasons that occurred, e.g. "3 (crashed 2, stalled 1)".
func restartsCell(r v1alpha1.RestartCounts) string {
	byReason := []struct {
		name string
		n    int32
	}{{"crashed", r.Crashed}, {"stalled", r.Stalled}, {"looping", r.Looping}, {"gpuUnhealthy", r.GPUUnhealthy}}
	var total int32
	var parts []string
	for _, x := range byReason {
		if x.n > 0 {
			total += x.n
			parts = append(parts, fmt.Sprintf("%s %d", x.name, x.n))
		}
	}
	if total == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}

// gpusCell is "allocated/requested product", or "-" for a fleet without GPUs.
func gpusCell(g v1alpha1.GPUStatus) string {
	if g.Requested == 0 && g.Allocated == 0 {
		return "-"
	}
	s := fmt.Sprintf("%d/%d", g.Allocated, g.Requested)
	if g.Product != "" {
		s += " " + g.Product
	}
	return s
}

// reason is why the fleet is Degraded if it is, else the reason of its Ready condition.
func reason(conds []metav1.Condition) string {
	if d := meta.FindStatusCondition(conds, v1alpha1.ConditionDegraded); d != nil && d.Status == metav1.ConditionTrue {
		return d.Reason
	}
	if r := meta.FindStatusCondition(conds, v1alpha1.ConditionReady); r != nil {
		return r.Reason
	}
	return ""
}

// age is kubectl's AGE column.
func age(created metav1.Time, now time.Time) string {
	if created.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(created.Time))
}

func prefix(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
