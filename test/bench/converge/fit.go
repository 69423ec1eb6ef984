package main

import "math"

// fit is a least-squares line y = A + B*x, how well it fits (R2), and the exponent K of the power
// law y = c*x^K through the same points (the slope in log-log): K <= 1 is linear growth or better.
type fit struct {
	A  float64 `json:"a"`
	B  float64 `json:"b"`
	R2 float64 `json:"r2"`
	K  float64 `json:"exponent"`
	N  int     `json:"points"`
}

// fitLine fits the points (x[i], y[i]); fewer than two distinct x give a fit of N points and
// nothing else (NaN is not JSON).
func fitLine(x, y []float64) fit {
	f := fit{N: len(x)}
	a, b, r2, ok := leastSquares(x, y)
	if !ok {
		return f
	}
	f.A, f.B, f.R2 = a, b, r2
	var lx, ly []float64
	for i := range x {
		if x[i] > 0 && y[i] > 0 {
			lx, ly = append(lx, math.Log(x[i])), append(ly, math.Log(y[i]))
		}
	}
	if _, k, _, ok := leastSquares(lx, ly); ok {
		f.K = k
	}
	return f
}

func leastSquares(x, y []float64) (a, b, r2 float64, ok bool) {
	n := float64(len(x))
	if len(x) < 2 || len(x) != len(y) {
		return 0, 0, 0, false
	}
	var sx, sy float64
	for i := range x {
		sx, sy = sx+x[i], sy+y[i]
	}
	mx, my := sx/n, sy/n
	var sxx, sxy, syy float64
	for i := range x {
		sxx += (x[i] - mx) * (x[i] - mx)
		sxy += (x[i] - mx) * (y[i] - my)
		syy += (y[i] - my) * (y[i] - my)
	}
	if sxx == 0 {
		return 0, 0, 0, false
	}
	b = sxy / sxx
	a = my - b*mx
	r2 = 1.0
	if syy > 0 {
		r2 = sxy * sxy / (sxx * syy)
	}
	return a, b, r2, true
}

// line says whether the fit has a line to show: its points had two distinct x or more (one size
// measured several times has none), and y was not zero at all of them (as our operator's API
// requests in the floor phase).
func (f fit) line() bool { return f.A != 0 || f.B != 0 }
