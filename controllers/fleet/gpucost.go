package fleet

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/controllers/usage"
	"github.com/agentfleet/agentfleet/internal/cost"
)

// GPU cost accounting. The operator integrates, per fleet, the GPUs its Running worker pods hold
// (observed at each reconcile: pods starting and stopping wake the fleet) over time, into GPU-seconds
// and, at the price of each GPU product, into cost. At a scrape the integral is carried to the
// moment of the scrape, so a fleet that does not change still counts up between reconciles.
//
// The counters start at zero with the process, as every Prometheus counter; increase() over them
// survives a restart. What runs between the last scrape of a process and the first reconcile of the
// next is not counted (seconds, against hours of a report).

// PriceSource gives the price table to apply now.
type PriceSource interface {
	Prices(ctx context.Context) (cost.Prices, error)
}

// StaticPrices is a fixed table (the documented default when no ConfigMap is configured).
type StaticPrices cost.Prices

// Prices returns the table.
func (p StaticPrices) Prices(context.Context) (cost.Prices, error) { return cost.Prices(p), nil }

// ConfigMapPrices reads the table from a ConfigMap's cost.PricesKey. Its metadata comes from the
// manager's cache (ConfigMaps are watched, as metadata only); its contents are read from the API
// server only when its resourceVersion changed, and parsed once per version. A missing or invalid
// table is an error; the last valid table stays in force meanwhile (none before the first: every
// GPU is then unpriced, never priced at 0).
type ConfigMapPrices struct {
	Key       types.NamespacedName
	Metadata  client.Reader // the cache
	APIReader client.Reader

	mu      sync.Mutex
	version string
	prices  cost.Prices
	err     error
}

// Prices returns the table in force and, if the ConfigMap could not be read or parsed, why.
func (c *ConfigMapPrices) Prices(ctx context.Context) (cost.Prices, error) {
	meta := &metav1.PartialObjectMetadata{}
	meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ConfigMap"))
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Metadata.Get(ctx, c.Key, meta); err != nil {
		if apierrors.IsNotFound(err) {
			return c.prices, fmt.Errorf("the GPU price table ConfigMap %s does not exist", c.Key)
		}
		return c.prices, fmt.Errorf("reading the GPU price table ConfigMap %s: %w", c.Key, err)
	}
	if meta.ResourceVersion == c.version {
		return c.prices, c.err
	}
	cm := &corev1.ConfigMap{}
	if err := c.APIReader.Get(ctx, c.Key, cm); err != nil {
		return c.prices, fmt.Errorf("reading the GPU price table ConfigMap %s: %w", c.Key, err)
	}
	c.version = cm.ResourceVersion
	p, err := cost.PricesFromConfigMap(cm.Data)
	if err != nil {
		c.err = fmt.Errorf("GPU price table ConfigMap %s: %w", c.Key, err)
		return c.prices, c.err
	}
	c.prices, c.err = p, nil
	return c.prices, nil
}

// gpuMeter integrates GPU allocation into GPU-seconds and cost. It is a prometheus.Collector.
type gpuMeter struct {
	clock clock.PassiveClock
	// windows, when set, receives each fleet's GPU cost as it accrues (fleet budgets, status).
	windows *usage.Windows

	mu sync.Mutex
	// uses are the fleets' current allocations, since the time of the last observation.
	uses map[types.NamespacedName]fleetUse
	// totals are the integrals up to each series' last observation. They outlive their use by
	// seriesRetention (a counter's last value must be scraped), then go: a deleted fleet, an old cost
	// center or product leaves no series behind for good.
	totals map[gpuSeries]*gpuTotal
	prices cost.Prices
	// pricesRead: a price table was read; pricesValid is false while the configured one cannot be
	// read or parsed. Nothing is said of the table before it was read (a replica that is not the
	// leader never reads it).
	pricesRead, pricesValid bool
	lastPrune               time.Time
}

// seriesRetention is how long a GPU series stays exported after its last use: many scrapes, so that
// Prometheus has its final value.
const seriesRetention = 15 * time.Minute

type gpuSeries struct{ namespace, fleet, costCenter, product string }

type gpuTotal struct {
	seconds float64
	// unpriced are the seconds accrued while the product had no price.
	unpriced float64
	cost     map[string]float64 // by currency
	// lastUsed is the last observation that used or declared the series.
	lastUsed time.Time
}

type fleetUse struct {
	since time.Time
	uses  []gpuUse
}

// gpuUse is a fleet's GPUs of one product, at the price of the time they were observed.
type gpuUse struct {
	series   gpuSeries
	gpus     int32
	hourly   float64
	priced   bool
	currency string
}

func newGPUMeter(c clock.PassiveClock, w *usage.Windows) *gpuMeter {
	return &gpuMeter{clock: c, windows: w, uses: map[types.NamespacedName]fleetUse{}, totals: map[gpuSeries]*gpuTotal{}}
}

var (
	descGPUSeconds = prometheus.NewDesc("agentfleet_gpu_seconds_total",
		"GPU-seconds held by a fleet's Running agent worker pods (observed, not requested), by the GPU product of their nodes.",
		[]string{"namespace", "fleet", "cost_center", "gpu_product"}, nil)
	descGPUCost = prometheus.NewDesc("agentfleet_gpu_cost_total",
		"Cost of the GPU-seconds of agentfleet_gpu_seconds_total at the price table's price of the product; unpriced products have no series here (see agentfleet_gpu_unpriced).",
		[]string{"namespace", "fleet", "cost_center", "gpu_product", "currency"}, nil)
	descGPUUnpricedSeconds = prometheus.NewDesc("agentfleet_gpu_unpriced_seconds_total",
		"The part of agentfleet_gpu_seconds_total accrued while the product had no price in the table: not in agentfleet_gpu_cost_total.",
		[]string{"namespace", "fleet", "cost_center", "gpu_product"}, nil)
	descGPUUnpriced = prometheus.NewDesc("agentfleet_gpu_unpriced",
		"GPUs a fleet holds now of a product the price table has no price for: counted in agentfleet_gpu_seconds_total, not in agentfleet_gpu_cost_total.",
		[]string{"namespace", "fleet", "gpu_product"}, nil)
	descGPUPrice = prometheus.NewDesc("agentfleet_gpu_price_per_hour",
		"The price table in force: the price of one GPU of a product for one hour.",
		[]string{"gpu_product", "currency"}, nil)
	descPriceTableValid = prometheus.NewDesc("agentfleet_gpu_price_table_valid",
		"1 while the configured GPU price table can be read and parsed; 0 when it cannot (the last valid table stays in force; the operator logs why).",
		nil, nil)
)

// observe records a fleet's allocation by product from now on, and accrues the previous one up to
// now. An empty allocation ends the fleet's use (its totals stay). declared is the GPU product the
// fleet declares ("" for none, or for a CPU fleet): its series exist from the fleet's first
// observation, at 0, before any GPU is held, because Prometheus' increase() cannot count what a
// counter gained before its first scrape: a series born with a value loses that value.
func (m *gpuMeter) observe(key types.NamespacedName, costCenter, declared string, alloc map[string]int32, prices cost.Prices, pricesErr error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock.Now()
	m.accrue(key, now)
	m.prices, m.pricesRead, m.pricesValid = prices, true, pricesErr == nil
	if declared != "" {
		m.series(gpuSeries{key.Namespace, key.Name, costCenter, declared}, prices, now)
	}
	var uses []gpuUse
	for _, product := range slices.Sorted(maps.Keys(alloc)) {
		u := gpuUse{series: gpuSeries{key.Namespace, key.Name, costCenter, product}, gpus: alloc[product], currency: prices.Currency}
		u.hourly, u.priced = prices.GPUHour(product)
		m.series(u.series, prices, now)
		uses = append(uses, u)
	}
	m.prune(now)
	if len(uses) == 0 {
		delete(m.uses, key)
		return
	}
	m.uses[key] = fleetUse{since: now, uses: uses}
}

// series makes sure a series' totals exist: GPU-seconds, and the cost in the table's currency if
// the product is priced. Called with mu held.
func (m *gpuMeter) series(s gpuSeries, prices cost.Prices, now time.Time) {
	t := m.totals[s]
	if t == nil {
		t = &gpuTotal{cost: map[string]float64{}}
		m.totals[s] = t
	}
	t.lastUsed = now
	if _, priced := prices.GPUHour(s.product); priced {
		if _, ok := t.cost[prices.Currency]; !ok {
			t.cost[prices.Currency] = 0
		}
	}
}

// prune drops the series unused for seriesRetention, at most once a minute. Called with mu held.
func (m *gpuMeter) prune(now time.Time) {
	if now.Sub(m.lastPrune) < time.Minute {
		return
	}
	m.lastPrune = now
	inUse := map[gpuSeries]bool{}
	for _, fu := range m.uses {
		for _, u := range fu.uses {
			inUse[u.series] = true
		}
	}
	for s, t := range m.totals {
		if !inUse[s] && now.Sub(t.lastUsed) > seriesRetention {
			delete(m.totals, s)
		}
	}
}

// forget ends a deleted fleet's use.
func (m *gpuMeter) forget(key types.NamespacedName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.accrue(key, m.clock.Now())
	delete(m.uses, key)
}

// accrue adds a fleet's current use up to now into the totals. Called with mu held.
func (m *gpuMeter) accrue(key types.NamespacedName, now time.Time) {
	fu, ok := m.uses[key]
	if !ok {
		return
	}
	for _, u := range fu.uses {
		seconds, cost := u.since(fu.since, now)
		t := m.totals[u.series]
		t.seconds += seconds
		t.lastUsed = now
		if u.priced {
			t.cost[u.currency] += cost
			if m.windows != nil {
				// Put at the end of the interval: a budget window keeps it a little longer, never less.
				m.windows.Add(key, now, usage.Use{GPUCost: cost})
			}
		} else {
			t.unpriced += seconds
		}
	}
	fu.since = now
	m.uses[key] = fu
}

// since is the GPU-seconds and cost of a use from one time to another (none if time went back).
func (u gpuUse) since(from, to time.Time) (seconds, cost float64) {
	d := max(to.Sub(from).Seconds(), 0)
	seconds = float64(u.gpus) * d
	return seconds, seconds / 3600 * u.hourly
}

// Describe sends the descriptors.
func (m *gpuMeter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descGPUSeconds, descGPUCost, descGPUUnpricedSeconds, descGPUUnpriced, descGPUPrice, descPriceTableValid} {
		ch <- d
	}
}

// Collect sends the totals carried to now, without changing them.
func (m *gpuMeter) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock.Now()
	seconds := map[gpuSeries]float64{}
	unpriced := map[gpuSeries]float64{}
	costs := map[gpuSeries]map[string]float64{}
	for s, t := range m.totals {
		seconds[s], unpriced[s] = t.seconds, t.unpriced
		costs[s] = maps.Clone(t.cost)
	}
	for _, fu := range m.uses {
		for _, u := range fu.uses {
			sec, c := u.since(fu.since, now)
			seconds[u.series] += sec
			if u.priced {
				costs[u.series][u.currency] += c
			} else {
				unpriced[u.series] += sec
				ch <- prometheus.MustNewConstMetric(descGPUUnpriced, prometheus.GaugeValue, float64(u.gpus), u.series.namespace, u.series.fleet, u.series.product)
			}
		}
	}
	for s, v := range seconds {
		ch <- prometheus.MustNewConstMetric(descGPUSeconds, prometheus.CounterValue, v, s.namespace, s.fleet, s.costCenter, s.product)
		ch <- prometheus.MustNewConstMetric(descGPUUnpricedSeconds, prometheus.CounterValue, unpriced[s], s.namespace, s.fleet, s.costCenter, s.product)
		for currency, c := range costs[s] {
			ch <- prometheus.MustNewConstMetric(descGPUCost, prometheus.CounterValue, c, s.namespace, s.fleet, s.costCenter, s.product, currency)
		}
	}
	for _, product := range m.prices.Products() {
		hourly, _ := m.prices.GPUHour(product)
		ch <- prometheus.MustNewConstMetric(descGPUPrice, prometheus.GaugeValue, hourly, product, m.prices.Currency)
	}
	if m.pricesRead {
		valid := 0.0
		if m.pricesValid {
			valid = 1
		}
		ch <- prometheus.MustNewConstMetric(descPriceTableValid, prometheus.GaugeValue, valid)
	}
}

// meterGPUs records the fleet's observed GPU allocation by product with the prices in force, and
// returns the allocation (nil, and nothing recorded, when the pods could not be observed). A price table that cannot be read is logged, not fatal: GPUs are still
// counted, and priced by the last valid table.
func (r *Reconciler) meterGPUs(ctx context.Context, s *scope) map[string]int32 {
	log := ctrl.LoggerFrom(ctx)
	prices, err := r.scopePrices(ctx, s)
	pods := s.pods
	if pods == nil || s.preview {
		// A phase blocked or failed before the workers were observed (a dependency not ready, a
		// prompt gone, the GPU policy): the workers of an existing RayCluster still hold their GPUs.
		// And a blue-green preview's workers hold theirs beside the active RayCluster's.
		var list corev1.PodList
		if err := r.List(ctx, &list, client.InNamespace(s.fleet.Namespace),
			client.MatchingFields{fleetIndex: s.fleet.Name}, client.MatchingLabels{v1alpha1.LabelRole: v1alpha1.RoleAgent}); err != nil {
			log.Error(err, "Listing the agent workers for the GPU meter; the last allocation stands")
			return nil
		}
		pods = list.Items
	}
	if s.gpuNodes.products == nil && len(pods) > 0 {
		// The health phase did not run (a phase before it blocked): read the nodes' products here.
		nodes, nodeErr := r.observeGPUNodes(ctx, pods)
		if nodeErr != nil {
			log.Error(nodeErr, "Reading the GPU products of the workers' nodes; the declared product is used")
		}
		s.gpuNodes = nodes
	}
	alloc := cost.Allocation(pods, s.gpuNodes.products, s.fleet.Spec.Worker.GPUProduct)
	declared := ""
	if f := s.fleet; f.Spec.Worker.GPUs > 0 && !f.Spec.Suspend {
		declared = f.Spec.Worker.GPUProduct
	}
	gpuUsage.observe(client.ObjectKeyFromObject(s.fleet), s.fleet.Spec.CostCenter, declared, alloc, prices, err)
	return alloc
}

// logPriceTable logs the price table's error when it changes (not at every reconcile of every
// fleet), and its recovery.
func (r *Reconciler) logPriceTable(ctx context.Context, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	r.priceErrMu.Lock()
	changed := msg != r.priceErr
	r.priceErr = msg
	r.priceErrMu.Unlock()
	switch {
	case !changed:
	case err != nil:
		ctrl.LoggerFrom(ctx).Error(err, "Reading the GPU price table; the last valid one stays in force")
	default:
		ctrl.LoggerFrom(ctx).Info("The GPU price table reads again")
	}
}

// prices is the price table in force, and why the configured one cannot be read (logged once per
// change).
func (r *Reconciler) prices(ctx context.Context) (cost.Prices, error) {
	p, err := r.priceSource().Prices(ctx)
	r.logPriceTable(ctx, err)
	return p, err
}

// scopePrices is the price table of a reconcile, read once for all its phases.
func (r *Reconciler) scopePrices(ctx context.Context, s *scope) (cost.Prices, error) {
	if !s.pricesRead {
		s.prices, s.pricesErr = r.prices(ctx)
		s.pricesRead = true
	}
	return s.prices, s.pricesErr
}

func (r *Reconciler) priceSource() PriceSource {
	if r.Prices == nil {
		return defaultPrices()
	}
	return r.Prices
}

// defaultPrices is the default table, parsed once: the ledger asks for prices at every Lease event
// that reports tokens (parsing the YAML each time was most of the ledger's CPU in make bench).
var defaultPrices = sync.OnceValue(func() StaticPrices { return StaticPrices(cost.DefaultPrices()) })
