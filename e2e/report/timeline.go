package report

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Timeline colours; red is used for failures only, which is what the tests look for.
var (
	colorOK      = color.RGBA{0x4c, 0xaf, 0x50, 0xff}
	colorFailed  = color.RGBA{0xe5, 0x1c, 0x23, 0xff}
	colorReady   = color.RGBA{0x1e, 0x50, 0xd2, 0xff}
	colorDeleted = color.RGBA{0x8c, 0x8c, 0x8c, 0xff}
	colorExited  = color.RGBA{0xf5, 0x8c, 0x0a, 0xff}
	colorText    = color.RGBA{0x28, 0x28, 0x28, 0xff}
	colorGrid    = color.RGBA{0xe6, 0xe6, 0xe6, 0xff}
)

const (
	imgW, imgH = 1200, 500
	// the plot area; room above for the title and legend, below for the time axis, on the
	// sides for the two scales
	plotL, plotR, plotT, plotB = 70, imgW - 60, 64, imgH - 46

	margin     = 5 * time.Second // shown before Start and after End
	maxSpan    = 6 * time.Hour   // beyond this the run's times are broken; draw the first part
	minFailedH = 4               // px: one failed request must show
	glyphW     = 7               // basicfont.Face7x13
)

// timeline is a run cut into one-second buckets, and the scales to draw it with.
type timeline struct {
	from      time.Time // left edge, a whole second
	secs      int
	ok, fail  []int
	rateMax   int // top of the left scale, a round number
	rateStep  int
	readyMax  int // top of the right scale
	zero      time.Time
	zeroLabel string // what time ticks count from
}

func newTimeline(r Run) timeline {
	var lo, hi time.Time
	extend := func(t time.Time) {
		if t.IsZero() {
			return
		}
		if lo.IsZero() || t.Before(lo) {
			lo = t
		}
		if hi.IsZero() || t.After(hi) {
			hi = t
		}
	}
	if !r.Start.IsZero() {
		extend(r.Start.Add(-margin))
	}
	if !r.End.IsZero() {
		extend(r.End.Add(margin))
	}
	for _, rec := range r.Records {
		extend(rec.Start)
	}
	for _, d := range r.Drains {
		extend(d.Deleted)
		extend(d.Exited)
	}
	if lo.IsZero() {
		lo = time.Unix(0, 0)
	}
	if hi.Before(lo.Add(10 * time.Second)) {
		hi = lo.Add(10 * time.Second)
	}
	if hi.After(lo.Add(maxSpan)) {
		hi = lo.Add(maxSpan)
	}

	t := timeline{from: lo.Truncate(time.Second), zero: r.Start, zeroLabel: "seconds since the change"}
	if t.zero.IsZero() {
		t.zero, t.zeroLabel = t.from, "seconds"
	}
	t.secs = int(hi.Sub(t.from)/time.Second) + 1
	t.ok, t.fail = make([]int, t.secs), make([]int, t.secs)
	for _, rec := range r.Records {
		i, ok := t.bucket(rec.Start)
		switch {
		case !ok:
		case rec.Outcome == OK:
			t.ok[i]++
		default:
			t.fail[i]++
		}
	}
	peak := 1
	for i := range t.ok {
		peak = max(peak, t.ok[i]+t.fail[i])
	}
	t.rateStep = niceStep(peak, 5)
	t.rateMax = (peak + t.rateStep - 1) / t.rateStep * t.rateStep
	for _, s := range r.Ready {
		t.readyMax = max(t.readyMax, s.Ready)
	}
	t.readyMax = max(t.readyMax+1, 2)
	return t
}

// bucket is the one-second bucket at holds.
func (t timeline) bucket(at time.Time) (int, bool) {
	if at.Before(t.from) {
		return 0, false
	}
	i := int(at.Sub(t.from) / time.Second)
	return i, i < t.secs
}

// x is the pixel column of at.
func (t timeline) x(at time.Time) int {
	frac := at.Sub(t.from).Seconds() / float64(t.secs)
	return plotL + int(math.Floor(float64(plotR-plotL)*frac))
}

// columns are the pixel columns of bucket i's bar: a gap between bars when they are wide
// enough, never less than one column.
func (t timeline) columns(i int) (x0, x1 int) {
	x0 = t.x(t.from.Add(time.Duration(i) * time.Second))
	x1 = t.x(t.from.Add(time.Duration(i+1) * time.Second))
	if x1-x0 >= 4 {
		x0, x1 = x0+1, x1-1
	}
	return x0, max(x1, x0+1)
}

func yOf(v, top int) int { return plotB - (plotB-plotT)*v/top }

// WriteTimeline draws r as a PNG: requests per one-second bucket (successful green, failed red
// on top, at least a few pixels high and marked under the axis so a single failure shows),
// ready pods as a blue step line on the right-hand scale, and a grey mark where each retired
// pod's deletion was seen and an orange one where it exited.
func WriteTimeline(w io.Writer, r Run) error {
	t := newTimeline(r)
	img := image.NewRGBA(image.Rect(0, 0, imgW, imgH))
	plot := image.Rect(plotL, plotT, plotR, plotB)
	fill(img, img.Bounds(), color.White)

	// left scale: requests per second
	for v := 0; v <= t.rateMax; v += t.rateStep {
		y := yOf(v, t.rateMax)
		fill(img, image.Rect(plotL, y, plotR, y+1), colorGrid)
		label := fmt.Sprintf("%d/s", v)
		text(img, plotL-8-glyphW*len(label), y+4, label, colorText)
	}
	// successful requests
	for i := range t.secs {
		if t.ok[i] == 0 {
			continue
		}
		x0, x1 := t.columns(i)
		fill(img, image.Rect(x0, yOf(t.ok[i], t.rateMax), x1, plotB), colorOK)
	}
	// ready pods: a step line, two pixels thick, on the right-hand scale
	ready := slices.Clone(r.Ready)
	slices.SortStableFunc(ready, func(a, b Sample) int { return a.T.Compare(b.T) })
	for i, s := range ready {
		y := yOf(s.Ready, t.readyMax)
		x1 := plotR
		if i+1 < len(ready) {
			x1 = t.x(ready[i+1].T)
			y2 := yOf(ready[i+1].Ready, t.readyMax)
			fill(img, image.Rect(x1-1, min(y, y2)-1, x1+1, max(y, y2)+1).Intersect(plot), colorReady)
		}
		fill(img, image.Rect(t.x(s.T), y-1, x1, y+1).Intersect(plot), colorReady)
	}
	readyStep := niceStep(t.readyMax, 8)
	for v := 0; v <= t.readyMax; v += readyStep {
		text(img, plotR+8, yOf(v, t.readyMax)+4, fmt.Sprint(v), colorReady)
	}
	text(img, plotR+4, plotT-8, "ready", colorReady)
	// drains
	for _, d := range r.Drains {
		for _, m := range []struct {
			at time.Time
			c  color.Color
		}{{d.Deleted, colorDeleted}, {d.Exited, colorExited}} {
			if !m.at.IsZero() {
				x := t.x(m.at)
				fill(img, image.Rect(x, plotT, x+1, plotB).Intersect(plot), m.c)
			}
		}
	}
	// failed requests last, so nothing covers them; and a mark under the axis
	for i := range t.secs {
		if t.fail[i] == 0 {
			continue
		}
		x0, x1 := t.columns(i)
		okTop := yOf(t.ok[i], t.rateMax)
		h := max((plotB-plotT)*t.fail[i]/t.rateMax, minFailedH)
		fill(img, image.Rect(x0, okTop-h, x1, okTop), colorFailed)
		fill(img, image.Rect(x0, plotB+2, x1, plotB+6), colorFailed)
	}

	// axes and time ticks
	fill(img, image.Rect(plotL, plotB, plotR, plotB+1), colorText)
	fill(img, image.Rect(plotL, plotT, plotL+1, plotB), colorText)
	fill(img, image.Rect(plotR, plotT, plotR+1, plotB), colorText)
	pxPerSec := float64(plotR-plotL) / float64(t.secs)
	step := timeStep(pxPerSec)
	end := t.from.Add(time.Duration(t.secs) * time.Second)
	first := t.zero.Add(-t.zero.Sub(t.from).Truncate(step)) // the first tick at or after from
	for at := first; !at.After(end); at = at.Add(step) {
		x := t.x(at)
		fill(img, image.Rect(x, plotB+1, x+1, plotB+8), colorText)
		label := fmt.Sprintf("%ds", int(at.Sub(t.zero).Round(time.Second).Seconds()))
		text(img, x-glyphW*len(label)/2, plotB+20, label, colorText)
	}
	text(img, (plotL+plotR)/2-glyphW*len(t.zeroLabel)/2, imgH-8, t.zeroLabel, colorText)

	// title, per-path counts, legend
	text(img, plotL, 18, fmt.Sprintf("%s · %s · %d", r.Scenario, r.Variant, r.Iteration), colorText)
	var counts []string
	for _, s := range Summarize(r) {
		counts = append(counts, fmt.Sprintf("%s: %d requests, %d failed", s.Path, s.Requests, s.Failed))
	}
	if c := strings.Join(counts, "   "); c != "" {
		text(img, plotR-glyphW*len(c), 18, c, colorText)
	}
	lx := plotL
	for _, l := range []struct {
		c     color.Color
		label string
	}{
		{colorOK, "ok/s"}, {colorFailed, "failed/s"}, {colorReady, "ready pods (right scale)"},
		{colorDeleted, "pod deletion seen"}, {colorExited, "pod exited"},
	} {
		fill(img, image.Rect(lx, 32, lx+12, 44), l.c)
		text(img, lx+16, 43, l.label, colorText)
		lx += 16 + glyphW*len(l.label) + 20
	}

	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("encode timeline of %s: %w", r.Name(), err)
	}
	return nil
}

// niceStep is a 1, 2 or 5 × 10^k step that cuts 0..top into at most n parts.
func niceStep(top, n int) int {
	for step := 1; ; step *= 10 {
		for _, m := range []int{1, 2, 5} {
			if top <= m*step*n {
				return m * step
			}
		}
	}
}

// timeStep spaces time ticks at least 60 px apart.
func timeStep(pxPerSec float64) time.Duration {
	for _, s := range []int{1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600} {
		if float64(s)*pxPerSec >= 60 {
			return time.Duration(s) * time.Second
		}
	}
	return 2 * time.Hour
}

func fill(img *image.RGBA, r image.Rectangle, c color.Color) {
	draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
}

// text draws s with its baseline at y. basicfont has ASCII only: a middle dot is drawn by hand.
func text(img *image.RGBA, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	for _, r := range s {
		if r == '·' {
			px := d.Dot.X.Round() + glyphW/2
			fill(img, image.Rect(px-1, y-5, px+1, y-3), c)
			d.Dot.X += fixed.I(glyphW)
			continue
		}
		d.DrawString(string(r))
	}
}
