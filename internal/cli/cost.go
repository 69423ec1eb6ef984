package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/agentfleet/agentfleet/api/v1alpha1"
	"github.com/agentfleet/agentfleet/internal/cost"
)

// DefaultPricesConfigMap is where the chart and config/default put the operator's price table.
const DefaultPricesConfigMap = "agentfleet-system/agentfleet-gpu-prices"

type costFlags struct {
	kube       kubeFlags
	prometheus string
	since      string
	until      string
	by         string
	format     string
	prices     string
	source     string
	currency   string
	recorded   bool
	timeout    time.Duration
}

func runCost(ctx context.Context, args []string, io IO) error {
	var f costFlags
	fs := newFlagSet("cost", io)
	f.kube.bind(fs)
	fs.StringVar(&f.prometheus, "prometheus", "", "the Prometheus that scrapes the operator (and the GPU agents), e.g. http://prometheus:9090; without it: the burn rate now, from the cluster")
	fs.StringVar(&f.since, "since", "7d", "how far back the report goes: a Prometheus duration (30m, 12h, 7d, 4w)")
	fs.StringVar(&f.until, "until", "", "the end of the report, RFC 3339 (default: now)")
	fs.StringVar(&f.by, "by", cost.ByFleet, "group by "+strings.Join(cost.GroupBys, ", ")+
		" (tokens and tasks carry no cost center: by cost_center, a fleet's go to the one its agentfleet_fleet_info had longest in the range, else to (none))")
	fs.StringVar(&f.format, "format", "table", "output: "+strings.Join(cost.Formats, ", ")+" (the burn rate: table, json)")
	fs.StringVar(&f.source, "price-source", "auto", "with --prometheus, where GPU prices come from: table (the operator's agentfleet_gpu_cost_total), opencost (OpenCost's node_gpu_hourly_cost), auto (opencost when the Prometheus has it, else table); token prices always come from the operator's table, in its currency")
	fs.StringVar(&f.currency, "opencost-currency", "USD", "the currency of OpenCost's prices (its CURRENCY_CODE): it must be the price table's, which prices the tokens")
	fs.BoolVar(&f.recorded, "recorded", false, "read the series config/prometheus/agentfleet-rules.yaml records every 5 minutes: for long ranges at short scrape intervals (the rules must have run for the whole range)")
	fs.StringVar(&f.prices, "prices", DefaultPricesConfigMap, "the burn rate's price table ConfigMap, namespace/name (the operator's --gpu-prices)")
	fs.DurationVar(&f.timeout, "timeout", 2*time.Minute, "give up on Prometheus after this long")
	positional, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(positional) > 0 {
		return fmt.Errorf("%w: cost takes no arguments, got %q", errUsage, positional)
	}
	if err := oneOf("by", f.by, cost.GroupBys); err != nil {
		return err
	}
	if f.prometheus == "" {
		return burnRate(ctx, f, io)
	}
	if err := oneOf("format", f.format, cost.Formats); err != nil {
		return err
	}
	if err := oneOf("price-source", f.source, append([]string{"auto"}, cost.PriceSources...)); err != nil {
		return err
	}
	o, err := f.reportOptions(time.Now())
	if err != nil {
		return err
	}
	prom, err := newPrometheus(f.prometheus)
	if err != nil {
		return err
	}
	if io.ErrIsTerminal {
		o.Progress = func(n, of int, what string) {
			fmt.Fprintf(io.Err, "\r\033[Kqueries done: %d of %d (%s)…", n, of, what)
		}
		defer fmt.Fprint(io.Err, "\r\033[K")
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	r, err := cost.Compute(ctx, prom, o)
	if err != nil {
		return explainPrometheus(err, f.prometheus)
	}
	return cost.Render(io.Out, r, f.format)
}

// reportOptions reads the range flags.
func (f costFlags) reportOptions(now time.Time) (cost.Options, error) {
	since, err := model.ParseDuration(f.since)
	if err != nil {
		return cost.Options{}, fmt.Errorf("%w: --since %q: %w (a Prometheus duration such as 30m, 12h, 7d, 4w)", errUsage, f.since, err)
	}
	if since <= 0 {
		return cost.Options{}, fmt.Errorf("%w: --since %q: the range is empty", errUsage, f.since)
	}
	until := now
	if f.until != "" {
		if until, err = time.Parse(time.RFC3339, f.until); err != nil {
			return cost.Options{}, fmt.Errorf("%w: --until %q: not RFC 3339 (2026-11-27T00:00:00Z)", errUsage, f.until)
		}
	}
	o := cost.Options{Since: until.Add(-time.Duration(since)), Until: until, By: f.by, OpenCostCurrency: f.currency, Recorded: f.recorded}
	if f.source != "auto" {
		o.Prices = f.source
	}
	return o, nil
}

func newPrometheus(address string) (v1.API, error) {
	u, err := url.Parse(address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: --prometheus %q: an http(s) URL, e.g. http://prometheus.monitoring:9090", errUsage, address)
	}
	c, err := promapi.NewClient(promapi.Config{Address: address})
	if err != nil {
		return nil, fmt.Errorf("--prometheus %q: %w", address, err)
	}
	return v1.NewAPI(c), nil
}

// explainPrometheus says what to do about the errors people meet first.
func explainPrometheus(err error, address string) error {
	var netErr *net.OpError
	var apiErr *v1.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("the Prometheus at %s did not answer within --timeout (a slow Prometheus, or an unreachable one): %w", address, err)
	case errors.As(err, &netErr):
		return fmt.Errorf("cannot reach Prometheus at %s (is the URL right, and the port forwarded?): %w", address, err)
	case errors.As(err, &apiErr):
		return fmt.Errorf("the Prometheus at %s refused a query: %w", address, err)
	}
	return err
}

// burnRate prints what the GPUs held now cost per hour and per day, from the cluster alone.
func burnRate(ctx context.Context, f costFlags, io IO) error {
	if err := oneOf("format", f.format, cost.BurnFormats); err != nil {
		return fmt.Errorf("%w (without --prometheus, the burn rate)", err)
	}
	c, namespace, err := f.kube.client()
	if err != nil {
		return err
	}
	var fleets v1alpha1.AgentFleetList
	if err := c.List(ctx, &fleets, client.InNamespace(namespace)); err != nil {
		return fmt.Errorf("listing agent fleets: %w", err)
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels{v1alpha1.LabelRole: v1alpha1.RoleAgent}); err != nil {
		return fmt.Errorf("listing agent worker pods: %w", err)
	}
	products := map[string]string{}
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		// Without nodes, the fleets' declared products price their GPUs.
		fmt.Fprintf(io.Err, "note: cannot list nodes (%v): GPU products are the fleets' declared ones\n", err)
	}
	for _, n := range nodes.Items {
		if p := n.Labels["nvidia.com/gpu.product"]; p != "" {
			products[n.Name] = p
		}
	}
	prices, err := readPrices(ctx, c, f.prices, io)
	if err != nil {
		return err
	}
	return cost.RenderBurn(io.Out, cost.BurnRate(fleets.Items, pods.Items, products, prices, f.by), f.format)
}

func readPrices(ctx context.Context, c client.Reader, ref string, io IO) (cost.Prices, error) {
	namespace, name, ok := strings.Cut(ref, "/")
	if !ok || namespace == "" || name == "" {
		return cost.Prices{}, fmt.Errorf("%w: --prices %q: namespace/name", errUsage, ref)
	}
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &cm); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			fmt.Fprintf(io.Err, "note: no price table ConfigMap %s: using the built-in default table\n", ref)
			return cost.DefaultPrices(), nil
		case apierrors.IsForbidden(err):
			fmt.Fprintf(io.Err, "note: you may not read the price table ConfigMap %s: using the built-in default table\n", ref)
			return cost.DefaultPrices(), nil
		}
		return cost.Prices{}, fmt.Errorf("reading the price table ConfigMap %s: %w", ref, err)
	}
	p, err := cost.PricesFromConfigMap(cm.Data)
	if err != nil {
		return cost.Prices{}, fmt.Errorf("the price table ConfigMap %s: %w", ref, err)
	}
	return p, nil
}

func runStatus(ctx context.Context, args []string, io IO) error {
	var k kubeFlags
	var output string
	fs := newFlagSet("status", io)
	k.bind(fs)
	fs.StringVar(&output, "o", "", "output: wide, json, yaml (default: a table)")
	fs.StringVar(&output, "output", "", "output: wide, json, yaml (default: a table)")
	positional, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(positional) > 1 {
		return fmt.Errorf("%w: status takes at most one fleet, got %q", errUsage, positional)
	}
	if err := oneOf("output", output, []string{"", "wide", "json", "yaml"}); err != nil {
		return err
	}
	if k.allNamespaces && len(positional) == 1 {
		return fmt.Errorf("%w: a fleet cannot be named across all namespaces: drop -A or give -n", errUsage)
	}
	c, namespace, err := k.client()
	if err != nil {
		return err
	}
	o := StatusOptions{Namespace: namespace, AllNamespaces: k.allNamespaces, Output: output}
	if len(positional) == 1 {
		o.Name = positional[0]
	}
	return Status(ctx, c, o, io.Out)
}
