package browser

import (
	"bytes"
	"context"
	"errors"
	"html"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentfleet/agentfleet/internal/cost"
)

func day(d int) time.Time { return time.Date(2026, time.November, d, 0, 0, 0, 0, time.UTC) }

// A group name with markup in it: it must come out of the chart as text, not as elements.
const oddGroup = `ml & "ops" <b>`

func report() cost.Report {
	return cost.Report{
		Since:    day(1),
		Until:    day(4),
		By:       cost.ByNamespace,
		Currency: "USD",
		Rows: []cost.Row{
			{Group: "team-a", GPUHours: 48, Cost: 120},
			{Group: oddGroup, GPUHours: 12, Cost: 30.75},
		},
		Total: cost.Row{Group: "TOTAL", GPUHours: 60, Cost: 150.75},
		Daily: []cost.Series{
			{Group: "team-a", Points: []cost.Point{{Day: day(1), Cost: 40}, {Day: day(2), Cost: 50}, {Day: day(3), Cost: 30}}},
			{Group: oddGroup, Points: []cost.Point{{Day: day(1), Cost: 0}, {Day: day(2), Cost: 10.5}, {Day: day(3), Cost: 20.25}}},
		},
	}
}

// wantBars is one bar per group per day with a non-zero cost in report().
var wantBars = map[string]float64{
	"team-a 2026-11-01":      40,
	"team-a 2026-11-02":      50,
	"team-a 2026-11-03":      30,
	oddGroup + " 2026-11-02": 10.5,
	oddGroup + " 2026-11-03": 20.25,
}

var (
	tagRE  = regexp.MustCompile(`<(svg|rect)\b[^>]*>`)
	attrRE = regexp.MustCompile(`([\w:-]+)="([^"]*)"`)
)

// elements returns the attributes of each <svg> and <rect> start tag of a DOM that Chromium
// serialised (attributes double-quoted, values entity-escaped).
func elements(dom string) (svgs, rects []map[string]string) {
	for _, m := range tagRE.FindAllStringSubmatch(dom, -1) {
		attrs := map[string]string{}
		for _, a := range attrRE.FindAllStringSubmatch(m[0], -1) {
			attrs[a[1]] = html.UnescapeString(a[2])
		}
		if m[1] == "svg" {
			svgs = append(svgs, attrs)
		} else {
			rects = append(rects, attrs)
		}
	}
	return svgs, rects
}

func writePage(t *testing.T, r cost.Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := cost.Render(&b, r, cost.FormatHTML); err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(t.TempDir(), "cost.html")
	if err := os.WriteFile(page, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return page
}

func chartError(dom string) string {
	m := regexp.MustCompile(`<p class="note" id="daily-cost-chart-error">([^<]*)</p>`).FindStringSubmatch(dom)
	if m == nil {
		return "(none on the page)"
	}
	return html.UnescapeString(m[1])
}

// The cost report's chart, drawn by its script in a real browser: the bars are there with the
// report's figures, and the screenshot shows them. It fails if the script breaks, since only the
// script sets data-rendered and makes the bars. The screenshot is kept with `go test -artifacts`.
func TestCostReportChartRenders(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Chromium; not in -short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	page := writePage(t, report())
	shot := filepath.Join(t.ArtifactDir(), "cost-report.png")

	dom, err := Render(ctx, page, shot)
	if err != nil {
		t.Fatal(err)
	}

	svgs, rects := elements(dom)
	var chart map[string]string
	for _, s := range svgs {
		if s["id"] == "daily-cost-chart" {
			chart = s
		}
	}
	if chart == nil {
		t.Fatalf("no <svg id=\"daily-cost-chart\"> in the DOM:\n%s", dom)
	}
	if chart["data-rendered"] != "true" {
		t.Fatalf("the chart's script did not finish (data-rendered=%q); the page's error: %s\nDOM:\n%s", chart["data-rendered"], chartError(dom), dom)
	}
	got := map[string]float64{}
	for _, r := range rects {
		if r["class"] != "bar" {
			continue
		}
		key := r["data-group"] + " " + r["data-day"]
		if _, dup := got[key]; dup {
			t.Errorf("two bars for %s", key)
		}
		v, err := strconv.ParseFloat(r["data-cost"], 64)
		if err != nil {
			t.Errorf("bar %s: data-cost %q: %v", key, r["data-cost"], err)
		}
		if h, err := strconv.ParseFloat(r["height"], 64); err != nil || h <= 0 {
			t.Errorf("bar %s: height %q, want > 0", key, r["height"])
		}
		got[key] = v
	}
	if diff := cmp.Diff(wantBars, got); diff != "" {
		t.Errorf("bars (group day → data-cost) (-want +got):\n%s", diff)
	}

	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 900 {
		t.Errorf("screenshot is %dx%d, want 1280x900", b.Dx(), b.Dy())
	}
	// The bars' colours on the screenshot: the chart was painted, not just built.
	for _, c := range []struct {
		group   string
		r, g, b uint32
	}{{"team-a", 0x4e, 0x79, 0xa7}, {oddGroup, 0xf2, 0x8e, 0x2b}} {
		if n := countColour(img, c.r, c.g, c.b); n < 500 {
			t.Errorf("screenshot has %d pixels of %s's bar colour #%02x%02x%02x, want a bar's worth (500+)", n, c.group, c.r, c.g, c.b)
		}
	}
}

// countColour counts the pixels within 3 of an 8-bit RGB colour on each channel.
func countColour(img image.Image, r, g, b uint32) int {
	near := func(a, b uint32) bool { return a+3 >= b && b+3 >= a }
	n := 0
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			pr, pg, pb, _ := img.At(x, y).RGBA()
			if near(pr>>8, r) && near(pg>>8, g) && near(pb>>8, b) {
				n++
			}
		}
	}
	return n
}

// A range with no cost shows the message, and no chart.
func TestCostReportEmptyRange(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Chromium; not in -short")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	r := cost.Report{Since: day(1), Until: day(8), By: cost.ByFleet, Total: cost.Row{Group: "TOTAL"}}
	dom, err := Render(ctx, writePage(t, r), "")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`<p class="empty" id="daily-cost-empty">no cost in this range</p>`).MatchString(dom) {
		t.Errorf("no \"no cost in this range\" message in the DOM:\n%s", dom)
	}
	if svgs, _ := elements(dom); len(svgs) != 0 {
		t.Errorf("an empty range drew %d <svg>, want none", len(svgs))
	}
}

func TestRenderMissingPage(t *testing.T) {
	_, err := Render(t.Context(), filepath.Join(t.TempDir(), "nope.html"), "")
	if err == nil || errors.Is(err, ErrNoChromium) {
		t.Fatalf("Render of a missing page: %v, want an error about the page", err)
	}
}
