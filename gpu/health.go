package gpu

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// This file judges one GPU from what NVML reported about it. It is pure and free of go-nvml (which
// needs cgo), so the operator, which imports this package for its labels, stays a static binary; the
// NVML side is in gpu/collector.

// Reading is a value NVML reported, or its absence: the GPU does not support it, or it could not be
// read this time.
type Reading[T any] struct {
	Value T
	Valid bool
}

// Valid is a present reading.
func Valid[T any](v T) Reading[T] { return Reading[T]{Value: v, Valid: true} }

// Sample is one poll of one GPU.
type Sample struct {
	// Index is NVML's index of the GPU on this node; UUID and Product (NVML's name, e.g. "NVIDIA H100
	// 80GB HBM3") are empty until the GPU has answered once.
	Index   int
	UUID    string
	Product string
	// Probed is false when the GPU was not asked this poll (it is unhealthy and its next re-probe is
	// not due): only its XIDs are known.
	Probed bool
	// Lost: a call answered ERROR_GPU_IS_LOST (fallen off the bus); ResetRequired: ERROR_RESET_REQUIRED.
	Lost          bool
	ResetRequired bool

	MemoryTotalBytes         Reading[uint64]
	MemoryUsedBytes          Reading[uint64]
	UtilizationGPUPercent    Reading[uint32]
	UtilizationMemoryPercent Reading[uint32]
	TemperatureC             Reading[uint32]
	PowerMilliwatts          Reading[uint32]
	// ClockEventReasons is NVML's bitmask of why clocks are held down now (ClockEvent*).
	ClockEventReasons Reading[uint64]
	// Volatile ECC counters: errors since the driver was loaded.
	ECCUncorrectedVolatile Reading[uint64]
	ECCCorrectedVolatile   Reading[uint64]
	RowRemapPending        Reading[bool]
	RowRemapFailure        Reading[bool]
	RetiredPagesPending    Reading[bool]

	// XIDs are the XID events (all of them, ignored ones included) that arrived since the last poll.
	XIDs []uint64
	// Errors are the calls that failed for another reason than "not supported" or a lost GPU, with
	// NVML's error; the readings they were for are absent.
	Errors []string
}

// State is a GPU's health.
type State string

const (
	Healthy   State = "Healthy"
	Degraded  State = "Degraded"
	Unhealthy State = "Unhealthy"
)

// Clock event (throttle) reasons, bits of Sample.ClockEventReasons, as nvml.h defines them
// (nvmlClocksEventReason*).
const (
	ClockEventSwPowerCap           uint64 = 0x4
	ClockEventHwSlowdown           uint64 = 0x8
	ClockEventSwThermalSlowdown    uint64 = 0x20
	ClockEventHwThermalSlowdown    uint64 = 0x40
	ClockEventHwPowerBrakeSlowdown uint64 = 0x80
)

// DefaultThrottleReasons are the clock event reasons that make a GPU Degraded by default. SwPowerCap
// is left out: a busy GPU running at its power limit reports it all the time.
const DefaultThrottleReasons = ClockEventHwSlowdown | ClockEventSwThermalSlowdown |
	ClockEventHwThermalSlowdown | ClockEventHwPowerBrakeSlowdown

var clockEvents = []struct {
	bit        uint64
	kind, name string
}{
	{ClockEventHwThermalSlowdown, "thermal throttling", "HwThermalSlowdown"},
	{ClockEventSwThermalSlowdown, "thermal throttling", "SwThermalSlowdown"},
	{ClockEventHwPowerBrakeSlowdown, "power throttling", "HwPowerBrakeSlowdown"},
	{ClockEventSwPowerCap, "power throttling", "SwPowerCap"},
	// HW slowdown is raised for heat or an external power brake; NVML does not say which.
	{ClockEventHwSlowdown, "hardware slowdown", "HwSlowdown"},
}

// DefaultIgnoredXIDList are the XIDs NVIDIA's device plugin treats as application errors, not GPU
// faults (internal/rm/health.go): 13 graphics engine exception, 31 GPU memory page fault, 43 GPU
// stopped processing, 45 preemptive cleanup, 68 video processor exception, 109 context switch timeout.
const DefaultIgnoredXIDList = "13,31,43,45,68,109"

// DefaultIgnoredXIDs is DefaultIgnoredXIDList parsed.
func DefaultIgnoredXIDs() []uint64 { return []uint64{13, 31, 43, 45, 68, 109} }

// ParseXIDList parses a comma-separated list of XID codes, as a flag takes it ("13,31, 43").
// Empty entries are skipped: "" is the empty list, which makes every XID critical.
func ParseXIDList(s string) ([]uint64, error) {
	var xids []uint64
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		x, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("parsing XID list %q: %w", s, err)
		}
		xids = append(xids, x)
	}
	return xids, nil
}

// xidNames name the XIDs most often seen in the field, for evidence a person can read
// (https://docs.nvidia.com/deploy/xid-errors/).
var xidNames = map[uint64]string{
	13:  "graphics engine exception",
	31:  "GPU memory page fault",
	43:  "GPU stopped processing",
	45:  "preemptive cleanup, due to previous errors",
	48:  "double bit ECC error",
	61:  "internal micro-controller breakpoint/warning",
	62:  "internal micro-controller halt",
	63:  "ECC page retirement or row remapping recording event",
	64:  "ECC page retirement or row remapper recording failure",
	68:  "video processor exception",
	69:  "graphics engine class error",
	74:  "NVLink error",
	79:  "GPU has fallen off the bus",
	92:  "high single-bit ECC error rate",
	94:  "contained ECC error",
	95:  "uncontained ECC error",
	109: "context switch timeout",
	119: "GSP RPC timeout",
	120: "GSP error",
}

// XIDString is "xid 79 (GPU has fallen off the bus)", or "xid N" for an XID without a known name.
func XIDString(xid uint64) string {
	if name, ok := xidNames[xid]; ok {
		return fmt.Sprintf("xid %d (%s)", xid, name)
	}
	return fmt.Sprintf("xid %d", xid)
}

// Policy is what makes a GPU Degraded or Unhealthy.
type Policy struct {
	// IgnoredXIDs are not faults; every other XID makes the GPU Unhealthy.
	IgnoredXIDs []uint64
	// ThrottleReasons are the clock event reasons (ClockEvent*) that make the GPU Degraded.
	ThrottleReasons uint64
	// MaxTemperatureC: a GPU hotter than this is Degraded; 0 turns the check off.
	MaxTemperatureC uint32
	// CorrectableBurst: more new correctable ECC errors than this between two polls make the GPU
	// Degraded; 0 turns the check off.
	CorrectableBurst uint64
}

// DefaultPolicy: the device plugin's ignored XIDs, thermal and power-brake throttling, 85 °C (data
// centre GPUs start slowing down themselves a few degrees above), and 100 correctable errors per poll.
func DefaultPolicy() Policy {
	return Policy{
		IgnoredXIDs:      DefaultIgnoredXIDs(),
		ThrottleReasons:  DefaultThrottleReasons,
		MaxTemperatureC:  85,
		CorrectableBurst: 100,
	}
}

// Verdict is the health of one GPU in one poll, and why.
type Verdict struct {
	State State
	// Evidence says why the GPU is not Healthy, the Unhealthy causes first; empty when Healthy.
	Evidence []string
	// CriticalXIDs are the XIDs, not ignored, that arrived this poll, each once, in order of arrival.
	CriticalXIDs []uint64
}

// Judge returns the verdict on cur, given the GPU's previous probed sample prev (the zero Sample when
// there is none), from which counter increases are measured.
//
// With no previous sample, volatile uncorrectable ECC errors since the driver was loaded count as
// new: a GPU that had one is unhealthy until it has been quiet for the recovery period. Correctable
// errors need a previous sample: a count since boot is not a burst.
func Judge(prev, cur Sample, p Policy) Verdict {
	var v Verdict
	var unhealthy, degraded []string
	if cur.Lost {
		unhealthy = append(unhealthy, "gpu lost (ERROR_GPU_IS_LOST)")
	}
	if cur.ResetRequired {
		unhealthy = append(unhealthy, "gpu requires a reset (ERROR_RESET_REQUIRED)")
	}
	for i, x := range cur.XIDs {
		if slices.Contains(p.IgnoredXIDs, x) || slices.Contains(v.CriticalXIDs, x) {
			continue
		}
		v.CriticalXIDs = append(v.CriticalXIDs, x)
		e := XIDString(x)
		if n := countFrom(cur.XIDs[i:], x); n > 1 {
			e = fmt.Sprintf("%s, %d events", e, n)
		}
		unhealthy = append(unhealthy, e)
	}
	if u := cur.ECCUncorrectedVolatile; u.Valid {
		var base uint64
		if pu := prev.ECCUncorrectedVolatile; pu.Valid && pu.Value <= u.Value {
			base = pu.Value // a smaller count means the driver was reloaded and the count restarted
		}
		if u.Value > base {
			unhealthy = append(unhealthy, fmt.Sprintf("volatile uncorrectable ECC errors %d -> %d", base, u.Value))
		}
	}
	if cur.RowRemapFailure.Valid && cur.RowRemapFailure.Value {
		unhealthy = append(unhealthy, "row remapping failed")
	}

	if r := cur.ClockEventReasons; r.Valid {
		for _, ce := range clockEvents {
			if r.Value&p.ThrottleReasons&ce.bit != 0 {
				degraded = append(degraded, fmt.Sprintf("%s (%s)", ce.kind, ce.name))
			}
		}
	}
	if t := cur.TemperatureC; p.MaxTemperatureC > 0 && t.Valid && t.Value > p.MaxTemperatureC {
		degraded = append(degraded, fmt.Sprintf("temperature %dC over %dC", t.Value, p.MaxTemperatureC))
	}
	if c, pc := cur.ECCCorrectedVolatile, prev.ECCCorrectedVolatile; p.CorrectableBurst > 0 && c.Valid && pc.Valid &&
		c.Value >= pc.Value && c.Value-pc.Value > p.CorrectableBurst {
		degraded = append(degraded, fmt.Sprintf("correctable ECC errors +%d in one poll (over %d)", c.Value-pc.Value, p.CorrectableBurst))
	}
	// Pending remaps and retirements take effect at the next GPU reset: the GPU works, but should be
	// reset when it can be drained.
	if cur.RowRemapPending.Valid && cur.RowRemapPending.Value {
		degraded = append(degraded, "row remapping pending (applied at the next GPU reset)")
	}
	if cur.RetiredPagesPending.Valid && cur.RetiredPagesPending.Value {
		degraded = append(degraded, "page retirement pending (applied at the next GPU reset)")
	}

	switch {
	case len(unhealthy) > 0:
		v.State = Unhealthy
	case len(degraded) > 0:
		v.State = Degraded
	default:
		v.State = Healthy
		return v
	}
	v.Evidence = slices.Concat(unhealthy, degraded) // Unhealthy causes first
	return v
}

func countFrom(xids []uint64, x uint64) int {
	n := 0
	for _, y := range xids {
		if y == x {
			n++
		}
	}
	return n
}
