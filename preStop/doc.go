// Package prestop is lastcall-prestop's drain sequence: take the pod out of every registry
// callers use, wait until they have observably stopped sending, and return in time for the app's
// own shutdown, whatever any dependency does.
package prestop
