package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/promanage/promanage/plugins"
)

const pluginUsage = `usage: promanage plugin run --hook <hook> [--config cfg.json] [--manifest manifest.json]
                            [--tenant slug] [--input event.json] [--json] module.wasm < event.json
       promanage plugin limits [--json]

run: runs one hook of a plugin locally exactly as the server would (the same
checks of the module, the same sandbox processes, limits and deadline, from
the PROMANAGE_PLUGIN_* settings) and prints the result, the duration and the
logs; a module over a limit is refused with the limit named. The input
(stdin, or --input) is, for a validation hook, a complete input, or
{"operation","input","current","project"}, or just the entity (taken as a
create); for a notification hook, the event ({"id","type","occurred_at","data"}).
Exit status 1 when the plugin fails.

limits: prints every limit in force with these settings (plugins/ABI.md
section 5 states the defaults).
`

// maxCLIInput bounds what `plugin run` reads from stdin or --input.
const maxCLIInput = 8 << 20

func (m *Main) runPlugin(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "limits" {
		return m.pluginLimits(args[1:])
	}
	if len(args) == 0 || args[0] != "run" {
		fmt.Fprint(m.Stderr, pluginUsage)
		return flag.ErrHelp
	}
	var hook, configPath, manifestPath, tenantSlug, inputPath string
	var asJSON bool
	fs, err := m.flags("plugin run", args[1:], func(fs *flag.FlagSet) {
		fs.StringVar(&hook, "hook", "", "hook to run, e.g. project.validate (required)")
		fs.StringVar(&configPath, "config", "", "JSON file with the plugin's config (an object)")
		fs.StringVar(&manifestPath, "manifest", "", "JSON file with the plugin's manifest (default: one for --hook)")
		fs.StringVar(&tenantSlug, "tenant", "local", "tenant slug shown to the plugin")
		fs.StringVar(&inputPath, "input", "-", "file with the event or input; - reads stdin")
		fs.BoolVar(&asJSON, "json", false, "print one JSON object instead of text")
	})
	if err != nil {
		return err
	}
	if hook == "" || fs.NArg() != 1 {
		fmt.Fprint(m.Stderr, pluginUsage)
		return errors.New("plugin run: --hook and one module file are required")
	}
	module, err := readLimited(fs.Arg(0), plugins.DefaultMaxModuleBytes*4)
	if err != nil {
		return fmt.Errorf("plugin run: module: %w", err)
	}
	run := plugins.LocalRun{Module: module, Hook: hook, Tenant: tenantSlug, Options: m.Config.pluginOptions()}
	run.Options.CacheDir = "" // a one-shot run writes nothing
	if configPath != "" {
		if run.Config, err = readLimited(configPath, 1<<20); err != nil {
			return fmt.Errorf("plugin run: config: %w", err)
		}
	}
	if manifestPath != "" {
		b, err := readLimited(manifestPath, 1<<20)
		if err != nil {
			return fmt.Errorf("plugin run: manifest: %w", err)
		}
		var mf plugins.Manifest
		if err := json.Unmarshal(b, &mf); err != nil {
			return fmt.Errorf("plugin run: manifest: %w", err)
		}
		run.Manifest = &mf
	}
	if run.Payload, err = readLimited(inputPath, maxCLIInput); err != nil {
		return fmt.Errorf("plugin run: input: %w", err)
	}

	res, runErr := plugins.RunLocal(ctx, run)
	out := struct {
		Hook       string          `json:"hook"`
		Result     json.RawMessage `json:"result"`
		Error      string          `json:"error,omitempty"`
		DurationMS float64         `json:"duration_ms"`
		Logs       []string        `json:"logs"`
	}{Hook: hook, Logs: []string{}}
	if res != nil && res.Invocation != nil {
		out.DurationMS = float64(res.Invocation.Duration.Microseconds()) / 1000
		if res.Invocation.Logs != nil {
			out.Logs = res.Invocation.Logs
		}
	}
	if res != nil && res.Validation != nil {
		out.Result, _ = json.Marshal(res.Validation)
	} else if res != nil && res.Notification != nil {
		out.Result, _ = json.Marshal(res.Notification)
	}
	if runErr != nil {
		out.Error = runErr.Error()
	}
	if asJSON {
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		if out.Result != nil {
			fmt.Fprintf(m.Stdout, "result:   %s\n", out.Result)
		}
		if out.Error != "" {
			fmt.Fprintf(m.Stdout, "error:    %s\n", out.Error)
		}
		fmt.Fprintf(m.Stdout, "duration: %.3f ms\n", out.DurationMS)
		fmt.Fprintf(m.Stdout, "logs:     %d line(s)\n", len(out.Logs))
		for _, l := range out.Logs {
			fmt.Fprintf(m.Stdout, "  %s\n", strings.TrimRight(l, "\n"))
		}
	}
	if runErr != nil {
		return fmt.Errorf("plugin run: %w", runErr)
	}
	return nil
}

// pluginLimits prints the limits `plugin run` and the server enforce with
// the current settings.
func (m *Main) pluginLimits(args []string) error {
	var asJSON bool
	if _, err := m.flags("plugin limits", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print a JSON array")
	}); err != nil {
		return err
	}
	limits := plugins.Limits(m.Config.pluginOptions())
	if asJSON {
		enc := json.NewEncoder(m.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(limits)
	}
	for _, l := range limits {
		fmt.Fprintf(m.Stdout, "%-45s %s\n", strings.ReplaceAll(l.Name, "`", ""), l.Value)
	}
	return nil
}

// readLimited reads a file ("-" is stdin) of at most max bytes.
func readLimited(path string, max int64) ([]byte, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return b, nil
}
