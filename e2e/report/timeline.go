package report

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Timeline colours, also what the tests look for.
var (
	ColorOK      = color.RGBA{0x3c, 0xa0, 0x3c, 0xff}
	ColorFailed  = color.RGBA{0xe0, 0x20, 0x20, 0xff}
	ColorReady   = color.RGBA{0x20, 0x50, 0xd0, 0xff}
	ColorDeleted = color.RGBA{0x90, 0x90, 0x90, 0xff}
	ColorExited  = color.RGBA{0xf0, 0x90, 0x10, 0xff}
	colorAxis    = color.RGBA{0x30, 0x30, 0x30, 0xff}
	colorGrid    = color.RGBA{0xe4, 0xe4, 0xe4, 0xff}
)

// Geometry of the plot area inside the image.
const (
	width, height                      = 1200, 500
	marginL, marginR, marginT, marginB = 60, 60, 50, 50
)

// timeline is a run cut into one-second buckets.
type timeline struct {
	from       time.Time
	secs       int
	ok, failed []int
	maxRate    int
	maxReady   int
}

func bucketize(r Run) timeline {
	from, to := r.Start.Add(-5*time.Second), r.End.Add(5*time.Second)
	for _, rec := range r.Records {
		if rec.Start.Before(from) {
			from = rec.Start
		}
		if rec.Start.After(to) {
			to = rec.Start
		}
	}
	from = from.Truncate(time.Second)
	t := timeline{from: from, secs: int(to.Sub(from)/time.Second) + 1}
	t.ok, t.failed = make([]int, t.secs), make([]int, t.secs)
	for _, rec := range r.Records {
		i := int(rec.Start.Sub(from) / time.Second)
		if i < 0 || i >= t.secs {
			continue
		}
		if rec.Outcome == OK {
			t.ok[i]++
		} else {
			t.failed[i]++
		}
	}
	t.maxRate = 1
	for i := range t.ok {
		t.maxRate = max(t.maxRate, t.ok[i]+t.failed[i])
	}
	for _, s := range r.Ready {
		t.maxReady = max(t.maxReady, s.Ready)
	}
	t.maxReady = max(t.maxReady+1, 2)
	return t
}

// x is the pixel column of time at.
func (t timeline) x(at time.Time) int {
	plotW := width - marginL - marginR
	return marginL + int(float64(plotW)*at.Sub(t.from).Seconds()/float64(t.secs))
}

// WriteTimeline draws a run as a PNG: requests per second (successful green, failed red on top,
// every failed second at least 3 px high), ready pods (blue, right axis), and a mark per retired
// pod when its deletion was seen (grey) and when it exited (orange).
func WriteTimeline(w io.Writer, r Run) error {
	t := bucketize(r)
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	plotH := height - marginT - marginB
	bottom := height - marginB
	y := func(v, maxV int) int { return bottom - plotH*v/maxV }

	// horizontal grid at quarters of the rate scale, labelled on the left
	for q := 0; q <= 4; q++ {
		v := t.maxRate * q / 4
		hline(img, marginL, width-marginR, y(v, t.maxRate), colorGrid)
		text(img, 4, y(v, t.maxRate)+4, fmt.Sprintf("%d/s", v), colorAxis)
	}
	// bars
	for i := 0; i < t.secs; i++ {
		x0, x1 := t.x(t.from.Add(time.Duration(i)*time.Second))+1, t.x(t.from.Add(time.Duration(i+1)*time.Second))-1
		if x1 < x0 {
			x1 = x0
		}
		okTop := y(t.ok[i], t.maxRate)
		fill(img, x0, okTop, x1, bottom, ColorOK)
		if t.failed[i] > 0 {
			h := max(plotH*t.failed[i]/t.maxRate, 3)
			fill(img, x0, okTop-h, x1, okTop, ColorFailed)
		}
	}
	// drain marks
	for _, d := range r.Drains {
		vline(img, t.x(d.Deleted), marginT, bottom, ColorDeleted)
		vline(img, t.x(d.Exited), marginT, bottom, ColorExited)
	}
	// ready pods, a step line two pixels thick
	for i, s := range r.Ready {
		end := r.End.Add(5 * time.Second)
		if i+1 < len(r.Ready) {
			end = r.Ready[i+1].T
		}
		yy := y(s.Ready, t.maxReady)
		fill(img, t.x(s.T), yy-1, t.x(end), yy+1, ColorReady)
		if i+1 < len(r.Ready) {
			y2 := y(r.Ready[i+1].Ready, t.maxReady)
			fill(img, t.x(end)-1, min(yy, y2), t.x(end)+1, max(yy, y2), ColorReady)
		}
	}
	for v := 0; v <= t.maxReady; v++ {
		text(img, width-marginR+6, y(v, t.maxReady)+4, fmt.Sprintf("%d", v), ColorReady)
	}
	// axes, time ticks every 5 s relative to the change
	hline(img, marginL, width-marginR, bottom, colorAxis)
	vline(img, marginL, marginT, bottom, colorAxis)
	for s := -5 * time.Second; r.Start.Add(s).Before(t.from.Add(time.Duration(t.secs) * time.Second)); s += 5 * time.Second {
		at := r.Start.Add(s)
		if at.Before(t.from) {
			continue
		}
		x := t.x(at)
		vline(img, x, bottom, bottom+5, colorAxis)
		text(img, x-8, bottom+18, fmt.Sprintf("%+.0fs", s.Seconds()), colorAxis)
	}
	text(img, marginL, 20, fmt.Sprintf("%s · %s · run %d", r.Scenario, r.Variant, r.Iteration), colorAxis)
	legend := []struct {
		c     color.Color
		label string
	}{{ColorOK, "ok/s"}, {ColorFailed, "failed/s"}, {ColorReady, "ready pods (right)"}, {ColorDeleted, "pod deleted"}, {ColorExited, "pod exited"}}
	lx := marginL
	for _, l := range legend {
		fill(img, lx, 32, lx+10, 42, l.c)
		text(img, lx+14, 42, l.label, colorAxis)
		lx += 24 + 7*len(l.label)
	}
	text(img, width/2-80, height-10, "seconds from the change", colorAxis)
	return png.Encode(w, img)
}

func fill(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	draw.Draw(img, image.Rect(x0, y0, x1, y1), image.NewUniform(c), image.Point{}, draw.Src)
}

func hline(img *image.RGBA, x0, x1, y int, c color.Color) { fill(img, x0, y, x1, y+1, c) }

func vline(img *image.RGBA, x, y0, y1 int, c color.Color) { fill(img, x, y0, x+1, y1, c) }

func text(img *image.RGBA, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}
