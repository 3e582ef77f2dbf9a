package connector

import (
	"math"
	"strconv"
	"time"

	"github.com/pbxbridge/pbxbridge/connector/outbox"
)

// The status page's charts are inline SVG drawn by the template from the geometry computed here:
// no script, no external resource, every text escaped by html/template.

// svgRect, svgText and svgLine are SVG elements in user units.
type (
	svgRect struct {
		X, Y, W, H float64
		Class      string
		Title      string // tooltip (an SVG <title>)
		Hour       string // data-hour
	}
	svgText struct {
		X, Y   float64
		Text   string
		Anchor string // start, middle, end
	}
	svgLine struct{ X1, Y1, X2, Y2 float64 }
)

// chartView is one chart: a plot area with horizontal grid lines, bars and axis labels.
type chartView struct {
	ID, Label  string // element id, aria-label
	W, H       float64
	Grid       []svgLine
	YLabels    []svgText
	XLabels    []svgText
	Bars       []svgRect
	Empty      string // shown over an empty plot
	EmptyX     float64
	EmptyY     float64
	PlotBottom float64
}

// Chart geometry: the calls chart spans the page, the latency charts a third of it.
const (
	chartW        = 720.0
	latencyW      = 380.0
	chartPadLeft  = 44.0
	chartPadRight = 6.0
	chartPadTop   = 8.0
	chartPadBot   = 20.0
	barFill       = 0.72 // share of an hour slot a bar covers
)

// outcome is how a call ended, as the chart groups it.
type outcome int

const (
	outAnswered outcome = iota
	outMissed
	outBusy
	outFailed
	outcomes // the number of outcomes
)

// outcomeKeys are the outcomes' message keys and CSS classes, in stacking order (bottom first).
var outcomeKeys = [outcomes]string{"answered", "missed", "busy", "failed"}

// hourCalls counts the calls that started in one hour by outcome.
type hourCalls struct {
	Start time.Time
	N     [outcomes]int
}

func (h hourCalls) total() int {
	t := 0
	for _, n := range h.N {
		t += n
	}
	return t
}

// niceCeil rounds x up to 1, 2 or 5 times a power of ten (at least min).
func niceCeil(x, minimum float64) float64 {
	if x <= minimum {
		return minimum
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

// newChart lays out an empty chart of height h over n hour slots starting at hours[0], with
// yMax at the top and yLabel formatting the grid values.
func newChart(l lang, id, label string, w, h float64, hours []time.Time, yMax float64, yLabel func(float64) string) (*chartView, float64, float64) {
	c := &chartView{ID: id, Label: label, W: w, H: h}
	plotW := w - chartPadLeft - chartPadRight
	plotH := h - chartPadTop - chartPadBot
	c.PlotBottom = chartPadTop + plotH
	for i := 0; i <= 2; i++ {
		v := yMax * float64(i) / 2
		y := c.PlotBottom - plotH*float64(i)/2
		c.Grid = append(c.Grid, svgLine{X1: chartPadLeft, Y1: y, X2: w - chartPadRight, Y2: y})
		c.YLabels = append(c.YLabels, svgText{X: chartPadLeft - 6, Y: y + 3.5, Text: yLabel(v), Anchor: "end"})
	}
	slot := plotW / float64(max(len(hours), 1))
	every := 3
	if w < chartW {
		every = 6
	}
	for i, t := range hours {
		if i%every == 0 {
			c.XLabels = append(c.XLabels, svgText{X: chartPadLeft + slot*(float64(i)+0.5), Y: h - 5, Text: l.Hour(t), Anchor: "middle"})
		}
	}
	c.EmptyX, c.EmptyY = chartPadLeft+plotW/2, chartPadTop+plotH/2
	return c, slot, plotH
}

// callsChart is the stacked bar chart of calls per hour by outcome.
func callsChart(l lang, hours []hourCalls) *chartView {
	peak := 0
	starts := make([]time.Time, len(hours))
	for i, h := range hours {
		peak = max(peak, h.total())
		starts[i] = h.Start
	}
	yMax := niceCeil(float64(peak), 4)
	c, slot, plotH := newChart(l, "chart-calls", l.T("chart.calls.label"), chartW, 170, starts, yMax, func(v float64) string { return l.Num(int64(v)) })
	if peak == 0 {
		c.Empty = l.T("chart.calls.empty")
	}
	for i, h := range hours {
		y := c.PlotBottom
		x := chartPadLeft + slot*float64(i) + slot*(1-barFill)/2
		span := l.Hour(h.Start) + "–" + l.Hour(h.Start.Add(time.Hour))
		for o := range outcomes {
			n := h.N[o]
			if n == 0 {
				continue
			}
			bh := plotH * float64(n) / yMax
			y -= bh
			c.Bars = append(c.Bars, svgRect{X: x, Y: y, W: slot * barFill, H: bh, Class: "bar " + outcomeKeys[o], Hour: h.Start.Format(time.RFC3339),
				Title: span + " · " + l.T("outcome."+outcomeKeys[o]) + ": " + l.Num(int64(n))})
		}
	}
	return c
}

// latencyView is one connector's delivery latency over the hours.
type latencyView struct {
	Connector       string
	Delivered       string
	P50, P95, Max   string
	Waiting, Dead   int
	Chart           *chartView
	Slow, HasWaited bool
}

// latencyCharts draws, per connector and on its own scale, p95 (light) and p50 (dark) bars per
// hour; the figures above each chart compare the connectors.
func latencyCharts(l lang, deliveries []outbox.ConnectorDeliveries) []latencyView {
	var out []latencyView
	for _, c := range deliveries {
		peak := time.Duration(0)
		for _, b := range c.Buckets {
			peak = max(peak, b.P95)
		}
		yMax := niceCeil(peak.Seconds(), 1)
		v := latencyView{Connector: c.Connector, Delivered: l.Num(int64(c.Total.Delivered)), P50: "—", P95: "—", Max: "—",
			Waiting: c.Total.Waiting, Dead: c.Total.Dead}
		if c.Total.Delivered > 0 {
			v.P50, v.P95, v.Max = l.Dur(c.Total.P50), l.Dur(c.Total.P95), l.Dur(c.Total.Max)
			v.Slow = c.Total.P95 > 30*time.Second
		}
		starts := make([]time.Time, len(c.Buckets))
		for i, b := range c.Buckets {
			starts[i] = b.Start
		}
		ch, slot, plotH := newChart(l, "chart-latency-"+c.Connector, l.F("chart.latency.label", c.Connector), latencyW, 120, starts, yMax, func(s float64) string {
			if s == 0 {
				return "0"
			}
			return l.Dur(time.Duration(s * float64(time.Second)))
		})
		if c.Total.Delivered == 0 {
			ch.Empty = l.T("chart.latency.empty")
		}
		for i, b := range c.Buckets {
			x := chartPadLeft + slot*float64(i) + slot*(1-barFill)/2
			span := l.Hour(b.Start) + "–" + l.Hour(b.Start.Add(time.Hour))
			hour := b.Start.Format(time.RFC3339)
			if b.Delivered > 0 {
				tip := span + " · " + l.N("plural.delivered", int64(b.Delivered)) + " · p50 " + l.Dur(b.P50) + " · p95 " + l.Dur(b.P95)
				for _, p := range []struct {
					d     time.Duration
					class string
				}{{b.P95, "bar p95"}, {b.P50, "bar p50"}} {
					bh := max(plotH*min(p.d.Seconds()/yMax, 1), 1)
					c := svgRect{X: x, Y: ch.PlotBottom - bh, W: slot * barFill, H: bh, Class: p.class, Hour: hour, Title: tip}
					ch.Bars = append(ch.Bars, c)
				}
			}
			if b.Waiting > 0 || b.Dead > 0 {
				class, tip := "mark waiting", span+" · "+l.N("plural.waiting", int64(b.Waiting))
				if b.Dead > 0 {
					class, tip = "mark dead", span+" · "+l.N("plural.dead", int64(b.Dead))
				}
				ch.Bars = append(ch.Bars, svgRect{X: x, Y: chartPadTop, W: slot * barFill, H: 3, Class: class, Hour: hour, Title: tip})
				v.HasWaited = true
			}
		}
		v.Chart = ch
		out = append(out, v)
	}
	return out
}

// px formats an SVG coordinate.
func px(v float64) string { return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64) }
