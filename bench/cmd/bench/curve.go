package main

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// curvePoint is one run of the instant provider on one broker: the load offered and what
// came of it.
type curvePoint struct {
	offered, confirmed, p50, p99 float64
	closed                       bool // a closed loop's: its clients sent as fast as they were answered
}

// curves are orderflow's runs with the instant provider (the open loops at fixed rates and
// the closed loops, whose offered load is what their clients sent), by broker, in the order
// the report lists the brokers, each by offered load.
func (r report) curves() (brokers []string, points map[string][]curvePoint) {
	points = map[string][]curvePoint{}
	for _, x := range r.Runs {
		if !strings.HasPrefix(x.Name, "open ") && x.Mode != "closed" || x.Confirmed == 0 || x.Peer {
			continue
		}
		if _, ok := points[x.Broker]; !ok {
			brokers = append(brokers, x.Broker)
		}
		points[x.Broker] = append(points[x.Broker], curvePoint{x.OfferedRate, x.ConfirmedPerSec, x.ConfirmMs.P50, x.ConfirmMs.P99, x.Mode == "closed"})
	}
	for _, b := range brokers {
		slices.SortFunc(points[b], func(a, b curvePoint) int { return cmp.Compare(a.offered, b.offered) })
	}
	return brokers, points
}

// svg draws the curve people look for: confirmed orders/s against the load offered, and
// POST→CONFIRMED p50 and p99 against it, a line per broker, titled with the commit and
// the machine. It writes nothing when no run qualifies.
func (r report) svg(w io.Writer) bool {
	brokers, points := r.curves()
	if len(brokers) == 0 {
		return false
	}
	const width, height, top, bottom, left, gap = 960, 420, 76, 50, 70, 90
	panel := (width - 2*left - gap) / 2
	maxX, maxY, maxMs, minMs := 0.0, 0.0, 0.0, math.Inf(1)
	for _, ps := range points {
		for _, p := range ps {
			maxX, maxY = max(maxX, p.offered), max(maxY, p.confirmed, p.offered)
			for _, v := range []float64{p.p50, p.p99} {
				if v > 0 {
					maxMs, minMs = max(maxMs, v), min(minMs, v)
				}
			}
		}
	}
	maxX, maxY = niceCeil(maxX), niceCeil(maxY)
	loMs, hiMs := math.Pow(10, math.Floor(math.Log10(max(minMs, 1)))), math.Pow(10, math.Ceil(math.Log10(max(maxMs, 10))))
	plotH := float64(height - top - bottom)
	x := func(i int, v float64) float64 { return float64(left+i*(panel+gap)) + v/maxX*float64(panel) }
	yRate := func(v float64) float64 { return float64(top) + plotH*(1-v/maxY) }
	yMs := func(v float64) float64 {
		return float64(top) + plotH*(1-(math.Log10(max(v, loMs))-math.Log10(loMs))/(math.Log10(hiMs)-math.Log10(loMs)))
	}
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd"}

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14">orderflow bench, %s, commit %s%s; hollow points: closed loops</text>`+"\n", left,
		r.Started.Format("2006-01-02 15:04 MST"), esc(cmp.Or(r.Commit, "unknown")), map[bool]string{true: " (QUICK=1)"}[r.Quick])
	fmt.Fprintf(&b, `<text x="%d" y="34" fill="#555">%s</text>`+"\n", left, esc(r.Machine))
	for i, title := range []string{"confirmed orders/s against orders/s offered", "POST→CONFIRMED ms (log scale): p99 solid, p50 dashed"} {
		x0 := float64(left + i*(panel+gap))
		fmt.Fprintf(&b, `<text x="%.0f" y="%d">%s</text>`+"\n", x0, top-12, esc(title))
		fmt.Fprintf(&b, `<rect x="%.0f" y="%d" width="%d" height="%.0f" fill="none" stroke="#999"/>`+"\n", x0, top, panel, plotH)
		for _, t := range ticks(maxX) {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%g</text>`+"\n", x(i, t), float64(height-bottom)+16, t)
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">orders/s offered</text>`+"\n", x0+float64(panel)/2, height-12)
	}
	for _, t := range ticks(maxY) {
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", left-6, yRate(t)+4, t)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", left, left+panel, yRate(t), yRate(t))
	}
	for v := loMs; v <= hiMs; v *= 10 {
		x0 := left + panel + gap
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", x0-6, yMs(v)+4, v)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", x0, x0+panel, yMs(v), yMs(v))
	}
	// Where confirmed would equal offered: a broker's line below it is a backlog.
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#bbb" stroke-dasharray="2,4"/>`+"\n",
		x(0, 0), yRate(0), x(0, min(maxX, maxY)), yRate(min(maxX, maxY)))
	line := func(ps []curvePoint, xi int, y func(curvePoint) (float64, bool), color, dash string) {
		var pts []string
		for _, p := range ps {
			if v, ok := y(p); ok {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(xi, p.offered), v))
				fill := color
				if p.closed {
					fill = "white"
				}
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s" stroke="%s"/>`+"\n", x(xi, p.offered), v, fill, color)
			}
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), color, dash)
	}
	for i, br := range brokers {
		color := colors[i%len(colors)]
		line(points[br], 0, func(p curvePoint) (float64, bool) { return yRate(p.confirmed), true }, color, "")
		line(points[br], 1, func(p curvePoint) (float64, bool) { return yMs(p.p99), p.p99 > 0 }, color, "")
		line(points[br], 1, func(p curvePoint) (float64, bool) { return yMs(p.p50), p.p50 > 0 }, color, ` stroke-dasharray="6,4"`)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			left+10, top+10+18*i, color, left+28, top+21+18*i, esc(brokerNames[br]))
	}
	b.WriteString("</svg>\n")
	_, _ = io.WriteString(w, b.String())
	return true
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// ticks are five even steps from 0 to top.
func ticks(top float64) []float64 {
	out := make([]float64, 0, 6)
	for i := range 6 {
		out = append(out, top*float64(i)/5)
	}
	return out
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
