//go:build !wasip1

package pdk

import (
	"fmt"
	"os"
)

// LogOutput receives Log's lines when the plugin runs natively (unit tests);
// inside the host they go to the invocation log instead.
var LogOutput = func(level int32, msg string) {
	fmt.Fprintf(os.Stderr, "pdk log %d: %s\n", level, msg)
}

func hostLog(level int32, msg string) { LogOutput(level, msg) }
