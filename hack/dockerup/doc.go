// Package dockerup holds no code: its tests run hack/docker-up.sh's decisions (what it would
// change on a machine, and the block it prints before changing anything) against made-up
// machines, without root and without touching Docker.
package dockerup
