package collector

import (
	"errors"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// fakeGPU is one GPU behind go-nvml's mock; tests change its fields between polls.
type fakeGPU struct {
	uuid, name string
	// lost: every call answers ERROR_GPU_IS_LOST; lostHandle: so does DeviceGetHandleByIndex.
	lost, lostHandle bool
	mem              nvml.Memory
	util             nvml.Utilization
	temp, power      uint32
	reasons          uint64
	eccUnc, eccCorr  uint64
	remapPending     bool
	remapFailed      bool
	retiredPending   bool
	events           uint64 // supported event types
	// rets overrides the answer of a call, by method name.
	rets map[string]nvml.Return

	dev *mock.Device
}

// healthyGPU is an idle H100 with nothing wrong.
func healthyGPU(uuid string) *fakeGPU {
	return &fakeGPU{
		uuid:   uuid,
		name:   "NVIDIA H100 80GB HBM3",
		mem:    nvml.Memory{Total: 80 << 30, Used: 1 << 30, Free: 79 << 30},
		util:   nvml.Utilization{Gpu: 30, Memory: 10},
		temp:   40,
		power:  120_000,
		events: nvml.EventTypeXidCriticalError | nvml.EventTypeSingleBitEccError | nvml.EventTypeDoubleBitEccError,
	}
}

func (g *fakeGPU) ret(call string) nvml.Return {
	if g.lost {
		return nvml.ERROR_GPU_IS_LOST
	}
	if r, ok := g.rets[call]; ok {
		return r
	}
	return nvml.SUCCESS
}

func (g *fakeGPU) device() *mock.Device {
	g.dev = &mock.Device{
		GetUUIDFunc: func() (string, nvml.Return) { return g.uuid, g.ret("GetUUID") },
		GetNameFunc: func() (string, nvml.Return) { return g.name, g.ret("GetName") },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return g.mem, g.ret("GetMemoryInfo")
		},
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
			return g.util, g.ret("GetUtilizationRates")
		},
		GetTemperatureFunc: func(s nvml.TemperatureSensors) (uint32, nvml.Return) {
			if s != nvml.TEMPERATURE_GPU {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return g.temp, g.ret("GetTemperature")
		},
		GetPowerUsageFunc: func() (uint32, nvml.Return) { return g.power, g.ret("GetPowerUsage") },
		GetCurrentClocksEventReasonsFunc: func() (uint64, nvml.Return) {
			return g.reasons, g.ret("GetCurrentClocksEventReasons")
		},
		GetCurrentClocksThrottleReasonsFunc: func() (uint64, nvml.Return) {
			return g.reasons, g.ret("GetCurrentClocksThrottleReasons")
		},
		GetTotalEccErrorsFunc: func(t nvml.MemoryErrorType, c nvml.EccCounterType) (uint64, nvml.Return) {
			if c != nvml.VOLATILE_ECC {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			if t == nvml.MEMORY_ERROR_TYPE_UNCORRECTED {
				return g.eccUnc, g.ret("GetTotalEccErrors")
			}
			return g.eccCorr, g.ret("GetTotalEccErrors")
		},
		GetRemappedRowsFunc: func() (int, int, bool, bool, nvml.Return) {
			return 0, 0, g.remapPending, g.remapFailed, g.ret("GetRemappedRows")
		},
		GetRetiredPagesPendingStatusFunc: func() (nvml.EnableState, nvml.Return) {
			st := nvml.FEATURE_DISABLED
			if g.retiredPending {
				st = nvml.FEATURE_ENABLED
			}
			return st, g.ret("GetRetiredPagesPendingStatus")
		},
		GetSupportedEventTypesFunc: func() (uint64, nvml.Return) {
			return g.events, g.ret("GetSupportedEventTypes")
		},
		RegisterEventsFunc: func(uint64, nvml.EventSet) nvml.Return { return g.ret("RegisterEvents") },
	}
	return g.dev
}

// fakeNVML is go-nvml's mock library over fake GPUs, with an XID event queue.
type fakeNVML struct {
	gpus    []*fakeGPU
	initRet nvml.Return
	// legacy: the driver lacks nvmlDeviceGetCurrentClocksEventReasons.
	legacy      bool
	eventSetRet nvml.Return
	queue       []nvml.EventData

	lib *mock.Interface
	set *mock.EventSet
}

func newFakeNVML(gpus ...*fakeGPU) *fakeNVML {
	f := &fakeNVML{gpus: gpus}
	for _, g := range gpus {
		g.device()
	}
	f.set = &mock.EventSet{
		WaitFunc: func(uint32) (nvml.EventData, nvml.Return) {
			if len(f.queue) == 0 {
				return nvml.EventData{}, nvml.ERROR_TIMEOUT
			}
			e := f.queue[0]
			f.queue = f.queue[1:]
			return e, nvml.SUCCESS
		},
		FreeFunc: func() nvml.Return { return nvml.SUCCESS },
	}
	f.lib = &mock.Interface{
		InitFunc:           func() nvml.Return { return f.initRet },
		ShutdownFunc:       func() nvml.Return { return nvml.SUCCESS },
		DeviceGetCountFunc: func() (int, nvml.Return) { return len(f.gpus), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i < 0 || i >= len(f.gpus) {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			if g := f.gpus[i]; g.lostHandle {
				return nil, nvml.ERROR_GPU_IS_LOST
			}
			return f.gpus[i].dev, nvml.SUCCESS
		},
		EventSetCreateFunc: func() (nvml.EventSet, nvml.Return) {
			if f.eventSetRet != nvml.SUCCESS {
				return nil, f.eventSetRet
			}
			return f.set, nvml.SUCCESS
		},
		ExtensionsFunc: func() nvml.ExtendedInterface {
			return &mock.ExtendedInterface{LookupSymbolFunc: func(name string) error {
				if f.legacy && name == "nvmlDeviceGetCurrentClocksEventReasons" {
					return errors.New("undefined symbol")
				}
				return nil
			}}
		},
	}
	return f
}

// xid queues an XID event on GPU i, as NVML reports it.
func (f *fakeNVML) xid(i int, code uint64) {
	f.queue = append(f.queue, nvml.EventData{
		Device:            f.gpus[i].dev,
		EventType:         nvml.EventTypeXidCriticalError,
		EventData:         code,
		GpuInstanceId:     0xFFFFFFFF,
		ComputeInstanceId: 0xFFFFFFFF,
	})
}
