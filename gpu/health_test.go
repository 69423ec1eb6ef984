package gpu

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseXIDList(t *testing.T) {
	cases := map[string]struct {
		in      string
		want    []uint64
		wantErr string
	}{
		"default":           {in: DefaultIgnoredXIDList, want: DefaultIgnoredXIDs()},
		"spaces and commas": {in: " 79, ,94,", want: []uint64{79, 94}},
		"empty":             {in: "", want: nil},
		"not a number":      {in: "13,x1", wantErr: `parsing XID list "13,x1": strconv.ParseUint: parsing "x1": invalid syntax`},
		"negative":          {in: "-1", wantErr: `parsing XID list "-1": strconv.ParseUint: parsing "-1": invalid syntax`},
		"too big":           {in: "4294967296", wantErr: `parsing XID list "4294967296": strconv.ParseUint: parsing "4294967296": value out of range`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := ParseXIDList(tc.in)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if diff := cmp.Diff(tc.wantErr, gotErr); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ParseXIDList(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

// Judge is driven through go-nvml's mock in gpu/collector; these are the cases about the previous
// sample and about a GPU that was not probed.
func TestJudge(t *testing.T) {
	cases := map[string]struct {
		prev, cur Sample
		want      Verdict
	}{
		"not probed, no events": {
			prev: Sample{Probed: true, ECCUncorrectedVolatile: Valid[uint64](3), RowRemapFailure: Valid(true)},
			cur:  Sample{},
			want: Verdict{State: Healthy},
		},
		"not probed, an XID": {
			cur:  Sample{XIDs: []uint64{31, 95}},
			want: Verdict{State: Unhealthy, CriticalXIDs: []uint64{95}, Evidence: []string{"xid 95 (uncontained ECC error)"}},
		},
		"uncorrectable count unreadable now": {
			prev: Sample{ECCUncorrectedVolatile: Valid[uint64](1)},
			cur:  Sample{Probed: true},
			want: Verdict{State: Healthy},
		},
		"correctable count restarted by a driver reload": {
			prev: Sample{ECCCorrectedVolatile: Valid[uint64](900)},
			cur:  Sample{ECCCorrectedVolatile: Valid[uint64](5)},
			want: Verdict{State: Healthy},
		},
		"lost and reset required": {
			cur: Sample{Lost: true, ResetRequired: true, XIDs: []uint64{79}},
			want: Verdict{State: Unhealthy, CriticalXIDs: []uint64{79}, Evidence: []string{
				"gpu lost (ERROR_GPU_IS_LOST)", "gpu requires a reset (ERROR_RESET_REQUIRED)", "xid 79 (GPU has fallen off the bus)",
			}},
		},
		"errors alone are no fault": {
			cur:  Sample{Probed: true, Errors: []string{"GetPowerUsage: ERROR_UNKNOWN"}},
			want: Verdict{State: Healthy},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Judge(tc.prev, tc.cur, DefaultPolicy())); diff != "" {
				t.Errorf("Judge (-want +got):\n%s", diff)
			}
		})
	}
}
