// Package svgchart writes small line and bar charts as plain SVG, without dependencies.
package svgchart

import (
	"fmt"
	"html"
	"math"
	"strings"
)

const (
	width, height          = 720, 420
	left, right, top, bott = 80, 170, 50, 60
)

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"}

// Point is one (x, y) value.
type Point struct{ X, Y float64 }

// Series is one named line.
type Series struct {
	Name   string
	Points []Point
}

// Lines draws series against numeric axes; logY draws the y axis in log10 scale.
// hline, when > 0, draws a dashed horizontal reference line labelled hlabel.
func Lines(title, xlabel, ylabel string, series []Series, logY bool, hline float64, hlabel string) string {
	xmin, xmax, ymin, ymax := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, p := range s.Points {
			xmin, xmax = math.Min(xmin, p.X), math.Max(xmax, p.X)
			ymin, ymax = math.Min(ymin, p.Y), math.Max(ymax, p.Y)
		}
	}
	if hline > 0 {
		ymin, ymax = math.Min(ymin, hline), math.Max(ymax, hline)
	}
	if math.IsInf(xmin, 1) {
		xmin, xmax, ymin, ymax = 0, 1, 0, 1
	}
	xmin = 0
	ty := func(v float64) float64 { return v }
	if logY {
		ymin = math.Pow(10, math.Floor(math.Log10(math.Max(ymin, 0.01))))
		ymax = math.Pow(10, math.Ceil(math.Log10(math.Max(ymax, ymin*10))))
		ty = func(v float64) float64 { return math.Log10(math.Max(v, ymin)) }
	} else {
		ymin, ymax = 0, niceCeil(ymax*1.1)
	}
	px := func(x float64) float64 { return left + (x-xmin)/(xmax-xmin)*(width-left-right) }
	py := func(y float64) float64 {
		return height - bott - (ty(y)-ty(ymin))/(ty(ymax)-ty(ymin))*(height-top-bott)
	}
	var b strings.Builder
	header(&b, title, xlabel, ylabel)
	// y grid
	var yticks []float64
	if logY {
		for v := ymin; v <= ymax*1.001; v *= 10 {
			yticks = append(yticks, v)
		}
	} else {
		for i := 0; i <= 5; i++ {
			yticks = append(yticks, ymin+(ymax-ymin)*float64(i)/5)
		}
	}
	for _, v := range yticks {
		y := py(v)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y, width-right, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" font-size="11">%s</text>`+"\n", left-6, y+4, num(v))
	}
	for i := 0; i <= 5; i++ {
		v := xmin + (xmax-xmin)*float64(i)/5
		x := px(v)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" font-size="11">%s</text>`+"\n", x, height-bott+16, num(v))
	}
	if hline > 0 {
		y := py(hline)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#555" stroke-dasharray="6,4"/>`+"\n", left, y, width-right, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" font-size="11" fill="#555">%s</text>`+"\n", width-right+4, y+4, html.EscapeString(hlabel))
	}
	for i, s := range series {
		c := palette[i%len(palette)]
		var pts []string
		for _, p := range s.Points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p.X), py(p.Y)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, strings.Join(pts, " "))
		for _, p := range s.Points {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(p.X), py(p.Y), c)
		}
		ly := top + 10 + i*18
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d" font-size="12">%s</text>`+"\n",
			width-right+10, ly, c, width-right+28, ly+10, html.EscapeString(s.Name))
	}
	axes(&b)
	b.WriteString("</svg>\n")
	return b.String()
}

// Bar is one bar with an optional spread (Lo..Hi) drawn as a whisker.
type Bar struct {
	Label     string
	Value     float64
	Lo, Hi    float64
	Highlight bool
}

// Bars draws a vertical bar chart; hline, when > 0, draws a dashed reference line labelled hlabel.
func Bars(title, ylabel string, bars []Bar, hline float64, hlabel string) string {
	ymax := hline
	for _, br := range bars {
		ymax = math.Max(ymax, math.Max(br.Value, br.Hi))
	}
	ymax = niceCeil(ymax * 1.1)
	if ymax == 0 {
		ymax = 1
	}
	plotW := float64(width - left - 30)
	py := func(y float64) float64 { return height - bott - y/ymax*(height-top-bott) }
	var b strings.Builder
	header(&b, title, "", ylabel)
	for i := 0; i <= 5; i++ {
		v := ymax * float64(i) / 5
		y := py(v)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y, width-30, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" font-size="11">%s</text>`+"\n", left-6, y+4, num(v))
	}
	slot := plotW / float64(max(len(bars), 1))
	for i, br := range bars {
		x := float64(left) + slot*float64(i) + slot*0.15
		w := slot * 0.7
		c := palette[0]
		if br.Highlight {
			c = "#888"
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x, py(br.Value), w, py(0)-py(br.Value), c)
		if br.Hi > br.Lo {
			cx := x + w/2
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#000"/>`+"\n", cx, py(br.Lo), cx, py(br.Hi))
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="11">%s</text>`+"\n", x+w/2, py(br.Value)-5, num(br.Value))
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" font-size="10">%s</text>`+"\n", x+w/2, height-bott+14, html.EscapeString(br.Label))
	}
	if hline > 0 {
		y := py(hline)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#d62728" stroke-dasharray="6,4"/>`+"\n", left, y, width-30, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" font-size="11" fill="#d62728">%s</text>`+"\n", left+4, y-4, html.EscapeString(hlabel))
	}
	axesW(&b, width-30)
	b.WriteString("</svg>\n")
	return b.String()
}

func header(b *strings.Builder, title, xlabel, ylabel string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif">`+"\n", width, height, width, height)
	fmt.Fprintf(b, `<rect width="100%%" height="100%%" fill="#fff"/>`+"\n")
	fmt.Fprintf(b, `<text x="%d" y="28" text-anchor="middle" font-size="15" font-weight="bold">%s</text>`+"\n", width/2, html.EscapeString(title))
	if xlabel != "" {
		fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle" font-size="12">%s</text>`+"\n", (left+width-right)/2, height-18, html.EscapeString(xlabel))
	}
	fmt.Fprintf(b, `<text transform="translate(18,%d) rotate(-90)" text-anchor="middle" font-size="12">%s</text>`+"\n", (top+height-bott)/2, html.EscapeString(ylabel))
}

func axes(b *strings.Builder) { axesW(b, width-right) }

func axesW(b *strings.Builder, xr int) {
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#000"/>`+"\n", left, height-bott, xr, height-bott)
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#000"/>`+"\n", left, top, left, height-bott)
}

func niceCeil(v float64) float64 {
	if v <= 0 {
		return 0
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return trim(fmt.Sprintf("%.2f", v/1e6)) + "M"
	case a >= 1e3:
		return trim(fmt.Sprintf("%.1f", v/1e3)) + "k"
	case a >= 10 || a == 0:
		return fmt.Sprintf("%.0f", v)
	case a >= 1:
		return trim(fmt.Sprintf("%.1f", v))
	default:
		return trim(fmt.Sprintf("%.2f", v))
	}
}

func trim(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}
