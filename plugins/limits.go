package plugins

import (
	"fmt"
	"strconv"
	"time"
)

// Limit is one bound the host enforces on plugins, named as ABI.md section
// 5 names it, with its value in force.
type Limit struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Option string `json:"option,omitempty"` // the Options field that sets it; empty: fixed
}

// Limits lists every limit the host enforces with opts (nil: the defaults):
// the operator's Options, the structural limits of precheck and the
// sandbox's fixed bounds. It is the one registry ABI.md's tables are checked
// against (abi_test.go), and what `promanage plugin limits` prints.
func Limits(opts *Options) []Limit {
	o := opts.withDefaults()
	l := []Limit{
		{"module size", bytesText(o.MaxModuleBytes), "MaxModuleBytes"},
		{"memory per instance", fmt.Sprintf("%s (%d pages)", bytesText(int64(o.MaxMemoryPages)*pageSize), o.MaxMemoryPages), "MaxMemoryPages"},
		{"input", bytesText(int64(o.MaxInputBytes)), "MaxInputBytes"},
		{"output", bytesText(int64(o.MaxOutputBytes)), "MaxOutputBytes"},
		{"log per call", bytesText(int64(o.MaxLogBytes)), "MaxLogBytes"},
		{"validation deadline", durationText(o.ValidateTimeout), "ValidateTimeout"},
		{"notification deadline", durationText(o.NotifyTimeout), "NotifyTimeout"},
		{"manifest `timeout_ms`", "up to " + durationText(o.MaxTimeout), "MaxTimeout"},
		{"instances per plugin version", countText(o.PoolSize), "PoolSize"},
		{"concurrent calls per tenant", countText(o.TenantConcurrency), "TenantConcurrency"},
		{"concurrent calls per process, all tenants", countText(o.MaxConcurrentCalls), "MaxConcurrentCalls"},
		{"compilations at once per tenant", countText(o.TenantConcurrentLoads), "TenantConcurrentLoads"},
		{"compilations at once per process", countText(o.MaxConcurrentLoads), "MaxConcurrentLoads"},
		{"compile CPU time", durationText(o.CompileCPU), "CompileCPU"},
		{"compile wall-clock time", durationText(o.CompileTimeout), "CompileTimeout"},
		{"sandbox processes per tenant", countText(o.TenantSandboxes), "TenantSandboxes"},
		{"sandbox processes per process", countText(o.MaxSandboxes), "MaxSandboxes"},
		{"sandbox memory", fmt.Sprintf("%d MiB of address space", o.SandboxMemoryMB), "SandboxMemoryMB"},
		{"call slack", durationText(WatchdogSlack), ""},
		{"`_initialize` deadline", "the hook's, at least " + durationText(initTimeoutFloor), ""},
		{"`fd_write` iovecs", countText(fdWriteMaxIovecs), ""},
		{"`fd_write` bytes copied per call", bytesText(fdWriteMaxBytes), ""},
		{"`poll_oneoff` subscriptions", countText(pollMaxSubscriptions), ""},
		{"one sleep", durationText(maxGuestSleep), ""},
		{"function types", countText(LimitTypes), ""},
		{"parameters, and results, of a type", countText(LimitTypeArity), ""},
		{"imports", countText(LimitImports), ""},
		{"functions", countText(LimitFunctions), ""},
		{"tables", countText(LimitTables), ""},
		{"table entries", countText(LimitTableEntries), ""},
		{"globals", countText(LimitGlobals), ""},
		{"exports", countText(LimitExports), ""},
		{"element segments", countText(LimitElementSegments), ""},
		{"element entries, all segments", countText(LimitElementEntries), ""},
		{"data segments", countText(LimitDataSegments), ""},
		{"parameters and locals of a function", countText(LimitFunctionLocals), ""},
		{"locals, all functions", countText(LimitTotalLocals), ""},
		{"locals times blocks, all functions", countText(LimitLocalsTimesBlocks), ""},
		{"function body", bytesText(LimitBodyBytes), ""},
		{"nesting depth", countText(LimitNestingDepth), ""},
		{"`br_table` targets", countText(LimitBrTableTargets), ""},
		{"`br_table` targets, all functions", countText(LimitTotalBrTableTarget), ""},
	}
	return l
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func durationText(d time.Duration) string {
	if d >= time.Second && d%time.Second == 0 {
		return fmt.Sprintf("%d s", d/time.Second)
	}
	if d%time.Millisecond == 0 {
		return fmt.Sprintf("%d ms", d/time.Millisecond)
	}
	return d.String()
}

// countText writes n with thousands separators, as ABI.md does.
func countText(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
