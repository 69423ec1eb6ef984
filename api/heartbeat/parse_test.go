package heartbeat_test

import (
	"testing"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
)

func TestParseCount(t *testing.T) {
	for _, tc := range []struct {
		value string
		n     int64
		ok    bool
	}{
		{"0", 0, true}, {"42", 42, true}, {" 7 ", 7, true}, {"", 0, false}, {"-1", 0, false}, {"1.5", 0, false}, {"lots", 0, false},
		{"9223372036854775808", 0, false},
	} {
		if n, ok := heartbeatapi.ParseCount(tc.value); n != tc.n || ok != tc.ok {
			t.Errorf("ParseCount(%q) = %d, %v; want %d, %v", tc.value, n, ok, tc.n, tc.ok)
		}
	}
}
