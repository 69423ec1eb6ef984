package grafana

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
)

// The metric types a Family may have, as Prometheus' exposition names them.
const (
	TypeCounter   = "counter"
	TypeGauge     = "gauge"
	TypeHistogram = "histogram"
	TypeSummary   = "summary"
)

// Family says whether a metric family is exported.
type Family struct {
	Exported bool
	// Type is the family's type when it is known ("histogram", ...), "" when not: a vector
	// with no series yet gathers nothing, so nothing tells its type.
	Type string
}

// Registry answers which metric families are exported.
type Registry interface {
	Family(name string) (Family, error)
}

// Families is a fixed Registry: names and their types.
type Families map[string]string

// Family implements Registry.
func (f Families) Family(name string) (Family, error) {
	t, ok := f[name]
	return Family{Exported: ok, Type: t}, nil
}

// Registries asks each Registry in turn.
type Registries []Registry

// Family implements Registry.
func (rs Registries) Family(name string) (Family, error) {
	for _, r := range rs {
		f, err := r.Family(name)
		if err != nil || f.Exported {
			return f, err
		}
	}
	return Family{}, nil
}

// Probe asks a Prometheus registry whether it has a family of a name. A registry lists no
// collectors, and a vector with no series gathers nothing, so Probe registers a descriptor of that
// name with a help string of its own: the registry refuses it exactly when a family of that name
// is registered, because descriptors of one name must share their help and labels (the
// consistency rule of prometheus.Desc); accepted, it is unregistered at once. The type comes from
// Gather, where the family has series.
//
// The registry remembers the help of every name it ever accepted, the probe's too: probe a
// registry whose registrations are done (controller-runtime's is filled as packages load), since
// it would refuse a later collector of a probed name that it did not have.
type Probe struct {
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
}

const probeHelp = "agentfleet test/grafana probe: a family of this name is registered when this is refused."

type probeCollector struct{ desc *prometheus.Desc }

func (c probeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c probeCollector) Collect(chan<- prometheus.Metric)    {}

// Family implements Registry.
func (p Probe) Family(name string) (Family, error) {
	// An invalid name would be refused too, for that reason alone.
	if !model.LegacyValidation.IsValidMetricName(name) {
		return Family{}, fmt.Errorf("%q is not a valid metric name", name)
	}
	c := probeCollector{prometheus.NewDesc(name, probeHelp, nil, nil)}
	if err := p.Registerer.Register(c); err == nil {
		p.Registerer.Unregister(c)
		return Family{}, nil
	}
	f := Family{Exported: true}
	if p.Gatherer == nil {
		return f, nil
	}
	mfs, err := p.Gatherer.Gather()
	if err != nil {
		return f, fmt.Errorf("gathering metrics: %w", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			f.Type = strings.ToLower(mf.GetType().String())
		}
	}
	return f, nil
}
