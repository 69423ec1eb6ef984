package heartbeat_test

import (
	"math"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"

	heartbeatapi "github.com/agentfleet/agentfleet/api/heartbeat"
)

// leaseCounts are count annotations as the clients write them in the unit and e2e tests (strconv
// of the counts the SDKs keep: steps, task-steps, action-repeats, tokens), and the malformed and
// out-of-range values a broken client could write.
var leaseCounts = []string{
	"0", "1", "7", "20", "50", "500", "1000", "4000", "200000", "400000", "20000000",
	" 7 ", "", "-1", "1.5", "lots", "1e3", "0x10", "+5", "-0", "007", "1_000", "٣",
	"9223372036854775807", "9223372036854775808", "-9223372036854775808", "99999999999999999999",
}

// FuzzParseCount: ParseCount accepts exactly the decimal integers from 0 to MaxInt64 (blanks
// around them allowed), returns their value, and refuses everything else with (0, false); so no
// negative, overflowing or malformed count is ever taken for one. A count the clients write
// (strconv.FormatInt of what they keep) reads back as itself. The oracle is math/big, not strconv,
// so that it does not share the parser's mistakes.
//
//	cd api/heartbeat && go test -run '^$' -fuzz '^FuzzParseCount$' -fuzztime 60s -fuzzminimizetime 100x -parallel 1
func FuzzParseCount(f *testing.F) {
	for _, v := range leaseCounts {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, value string) {
		n, ok := heartbeatapi.ParseCount(value)
		if !ok && n != 0 {
			t.Fatalf("ParseCount(%q) = %d, false; a refused count must read as 0", value, n)
		}
		if ok && n < 0 {
			t.Fatalf("ParseCount(%q) = %d, true: a negative count accepted", value, n)
		}

		want, isDecimal := decimalValue(strings.TrimSpace(value))
		inRange := isDecimal && want.Sign() >= 0 && want.IsInt64()
		if ok != inRange {
			t.Fatalf("ParseCount(%q) ok = %v; want %v (a decimal integer from 0 to MaxInt64: %v, value %v)", value, ok, inRange, isDecimal, want)
		}
		if ok && want.Int64() != n {
			t.Fatalf("ParseCount(%q) = %d; want %v", value, n, want)
		}

		// What the operator accepted, a client writes back the same: the writer's form round-trips.
		if ok {
			if back, ok := heartbeatapi.ParseCount(strconv.FormatInt(n, 10)); !ok || back != n {
				t.Fatalf("ParseCount(FormatInt(%d)) = %d, %v; want %d, true", n, back, ok, n)
			}
		}
	})
}

// FuzzParseCountWritten: every count a client can write (FormatInt of an int64, as the Go SDK
// does; the Python client writes str(int), the same digits) reads back as itself when it is 0 or
// more, and is refused when negative, whatever blanks surround it.
//
//	cd api/heartbeat && go test -run '^$' -fuzz FuzzParseCountWritten -fuzztime 60s -fuzzminimizetime 100x -parallel 1
func FuzzParseCountWritten(f *testing.F) {
	for _, n := range []int64{0, 1, 20, 1000, 400000, -1, math.MaxInt64, math.MinInt64} {
		f.Add(n, "")
	}
	f.Add(int64(7), " ")
	f.Add(int64(7), "\t\n")
	f.Fuzz(func(t *testing.T, n int64, blanks string) {
		if strings.TrimSpace(blanks) != "" {
			return // only blanks are allowed around a count
		}
		value := blanks + strconv.FormatInt(n, 10) + blanks
		got, ok := heartbeatapi.ParseCount(value)
		if n >= 0 && (!ok || got != n) {
			t.Fatalf("ParseCount(%q) = %d, %v; want %d, true", value, got, ok, n)
		}
		if n < 0 && (ok || got != 0) {
			t.Fatalf("ParseCount(%q) = %d, %v; want 0, false: a negative count accepted", value, got, ok)
		}
	})
}

// leaseTimes are last-step-time and task-started values as the clients write them: the Go SDK's
// UTC().Format(TimeFormat) (which drops trailing zeros of the fraction, and the fraction when it
// is 0) and the Python client's strftime("%Y-%m-%dT%H:%M:%S.%fZ") (always six digits).
var leaseTimes = []string{
	"2026-01-01T03:00:00Z", "2026-01-01T03:00:00.5Z", "2026-01-01T03:00:00.123456789Z",
	"2026-01-01T03:00:00.000000Z", "2026-11-27T14:05:09.123456Z", "1970-01-01T00:00:00Z",
	"", "2026-01-01 03:00:00Z", "2026-01-01T03:00:00+01:00", "2026-13-01T03:00:00Z", "9999-12-31T23:59:59.999999999Z",
}

// FuzzTimeFormat: the times of a heartbeat Lease as either client writes them, in UTC, read back
// with TimeFormat as the instant written (the Python client's to the microsecond it keeps); and a
// value that TimeFormat reads, written again in the Go client's form, reads back as the same
// instant, so the operator's parse and the clients' writes agree in both directions.
//
//	cd api/heartbeat && go test -run '^$' -fuzz FuzzTimeFormat -fuzztime 60s -fuzzminimizetime 100x -parallel 1
func FuzzTimeFormat(f *testing.F) {
	for i, v := range leaseTimes {
		f.Add(v, int64(1767236400+i), int64(i*123456789))
	}
	f.Fuzz(func(t *testing.T, value string, sec, nsec int64) {
		// The Go client: t.UTC().Format(TimeFormat), for any instant of the years 0001 to 9999.
		at := time.Unix(sec, nsec).UTC()
		if at.Year() >= 1 && at.Year() <= 9999 {
			written := at.Format(heartbeatapi.TimeFormat)
			read, err := time.Parse(heartbeatapi.TimeFormat, written)
			if err != nil || !read.Equal(at) {
				t.Fatalf("the Go client wrote %q for %v; read back as %v, %v", written, at, read, err)
			}
			// The Python client: always six digits of fraction, then Z.
			micro := at.Truncate(time.Microsecond)
			py := micro.Format("2006-01-02T15:04:05.000000Z")
			read, err = time.Parse(heartbeatapi.TimeFormat, py)
			if err != nil || !read.Equal(micro) {
				t.Fatalf("the Python client wrote %q for %v; read back as %v, %v", py, micro, read, err)
			}
		}

		// Whatever the reader accepts is an instant it can write and read again. (A time with an
		// offset may fall outside the years 0000-9999 once in UTC, which RFC 3339 cannot write:
		// no client writes offsets.)
		read, err := time.Parse(heartbeatapi.TimeFormat, value)
		if err != nil {
			return
		}
		if u := read.UTC(); u.Year() >= 0 && u.Year() <= 9999 {
			again, err := time.Parse(heartbeatapi.TimeFormat, u.Format(heartbeatapi.TimeFormat))
			if err != nil || !again.Equal(read) {
				t.Fatalf("%q read as %v, written as %q, read back as %v, %v", value, read, u.Format(heartbeatapi.TimeFormat), again, err)
			}
		}
	})
}

// decimalValue reads s as an optionally signed string of ASCII decimal digits.
func decimalValue(s string) (*big.Int, bool) {
	digits := strings.TrimLeft(s, "+-")
	if len(s)-len(digits) > 1 || digits == "" || strings.Trim(digits, "0123456789") != "" {
		return nil, false
	}
	n, ok := new(big.Int).SetString(s, 10)
	return n, ok
}
