package main

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	rayv1 "github.com/ray-project/kuberay/ray-operator/apis/ray/v1"
)

func TestFitLine(t *testing.T) {
	tests := map[string]struct {
		x, y []float64
		want fit
	}{
		"a line through the points": {
			x: []float64{50, 100, 200}, y: []float64{12, 22, 42},
			// y = 2 + 0.2x; the exponent is the log-log slope of those three points.
			want: fit{A: 2, B: 0.2, R2: 1, K: logSlope([]float64{50, 100, 200}, []float64{12, 22, 42}), N: 3},
		},
		"proportional growth has exponent 1": {
			x: []float64{10, 100, 1000}, y: []float64{1, 10, 100},
			want: fit{A: 0, B: 0.1, R2: 1, K: 1, N: 3},
		},
		"quadratic growth has exponent 2": {
			x: []float64{1, 2, 4}, y: []float64{1, 4, 16},
			// Worked by hand: mean x 7/3, mean y 7; Sxx 14/3, Sxy 24, Syy 126.
			want: fit{A: -5, B: 36.0 / 7, R2: 48.0 / 49, K: 2, N: 3},
		},
		"one point fits nothing": {
			x: []float64{50}, y: []float64{10},
			want: fit{N: 1},
		},
		"one size twice fits nothing": {
			x: []float64{50, 50}, y: []float64{10, 12},
			want: fit{N: 2},
		},
		"zero at every size is a line with nothing to show": {
			x: []float64{50, 100}, y: []float64{0, 0},
			want: fit{R2: 1, N: 2},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := fitLine(tt.x, tt.y)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
				t.Errorf("fitLine (-want +got):\n%s", diff)
			}
			// Printed only with a line: one size measured four times printed "time = 0.00 + 0.0000*N".
			if want := len(slices.Compact(slices.Sorted(slices.Values(tt.x)))) >= 2 && slices.ContainsFunc(tt.y, func(y float64) bool { return y != 0 }); got.line() != want {
				t.Errorf("line() = %t, want %t", got.line(), want)
			}
		})
	}
}

func logSlope(x, y []float64) float64 {
	var lx, ly []float64
	for i := range x {
		lx, ly = append(lx, math.Log(x[i])), append(ly, math.Log(y[i]))
	}
	_, b, _, _ := leastSquares(lx, ly)
	return b
}

func TestMedianRatios(t *testing.T) {
	r := results{Sizes: []sizeResult{
		{N: 50, Run: 1, Ratio: 1.4}, {N: 50, Run: 2, Ratio: 1.1}, {N: 50, Run: 3, Ratio: 1.2},
		{N: 100, Run: 1, Ratio: 1.3}, {N: 100, Run: 2, Ratio: 1.1},
		{N: 200, Run: 1}, // did not converge: no ratio
	}}
	want := []ratioSummary{{N: 50, Runs: 3, Median: 1.2, Min: 1.1, Max: 1.4}, {N: 100, Runs: 2, Median: 1.2, Min: 1.1, Max: 1.3}}
	if diff := cmp.Diff(want, r.medianRatios(), cmpopts.EquateApprox(0, 1e-9)); diff != "" {
		t.Errorf("medianRatios (-want +got):\n%s", diff)
	}
}

// The floor's RayClusters carry none of our labels, on them or on the pods KubeRay makes from them,
// so that our operator, running beside, ignores them.
func TestFloorObjectsCarryNoAgentFleetLabels(t *testing.T) {
	objs, err := (&bench{s: settings{Workers: 4}}).objects(phaseFloor, "ns", 1)
	if err != nil {
		t.Fatal(err)
	}
	rc := objs[0].(*rayv1.RayCluster)
	sets := map[string]map[string]string{"metadata": rc.Labels, "head": rc.Spec.HeadGroupSpec.Labels, "head template": rc.Spec.HeadGroupSpec.Template.Labels}
	for _, g := range rc.Spec.WorkerGroupSpecs {
		sets[g.GroupName], sets[g.GroupName+" template"] = g.Labels, g.Template.Labels
	}
	for where, labels := range sets {
		for k := range labels {
			if strings.HasPrefix(k, "agentfleet.dev/") {
				t.Errorf("%s label %s on a floor RayCluster", where, k)
			}
		}
	}
}
