//go:build race

package plugins

// raceEnabled: the race detector maps terabytes of shadow memory, so a
// sandbox child built with -race cannot have an address-space limit.
const raceEnabled = true
