// Command promanage is ProManage's one binary:
//
//	promanage serve     the REST API
//	promanage worker    the outbox worker and scheduler
//	promanage migrate   upgrade the public schema and every tenant schema
//	promanage tenant    create | list | suspend | resume | purge
//	promanage plugin    run a plugin locally (plugin run --hook ... module.wasm)
//	promanage dev       everything for local development (what `make run` uses)
//
// This package only wires things together and parses flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/promanage/promanage/plugins"
)

// Set at build time with -ldflags "-X main.version=... -X main.revision=...".
var (
	version  = "dev"
	revision = "unknown"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == plugins.SandboxArg {
		os.Exit(NewMain(os.Stdout, os.Stderr).runSandbox(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := NewMain(os.Stdout, os.Stderr)
	if err := m.Run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "promanage:", err)
		os.Exit(1)
	}
}

// Main is the program, testable: tests run it with their own arguments and
// output and stop it by cancelling the context.
type Main struct {
	Stdout, Stderr io.Writer
	Config         Config
	// ready, if set, receives the API's listen address once it serves (tests).
	ready chan<- string
	// metricsReady, if set, receives the metrics listener's address (tests).
	metricsReady chan<- string
}

// NewMain returns a Main writing to the given streams.
func NewMain(stdout, stderr io.Writer) *Main { return &Main{Stdout: stdout, Stderr: stderr} }

const usage = `usage: promanage <command> [flags]

commands:
  serve            run the REST API
  worker           run the outbox worker and the scheduler
  migrate          upgrade the public schema, then every tenant schema
  tenant create    create a tenant:  tenant create -slug acme -name "Acme" -owner alice@example.com
  tenant list      list tenants with their state and schema version
  tenant suspend|resume|purge -slug acme
  tenant export    one tenant (schema data and documents) as .tar.gz: tenant export -slug acme -out acme.tar.gz
  tenant settings  operator limits of a tenant: tenant settings -slug acme -set-quota-bytes 10737418240 -set-max-file-bytes 104857600
  plugin run       run a plugin locally as the server would:  plugin run --hook project.validate --config cfg.json module.wasm < event.json
  dev              local development: Postgres check, Kratos, migrations, API and worker
  version          print the version

Every flag can also be set by its PROMANAGE_* environment variable (see README.md).
`

// Run runs one command.
func (m *Main) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage)
		return flag.ErrHelp
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return m.runServe(ctx, rest)
	case "worker":
		return m.runWorker(ctx, rest)
	case "migrate":
		return m.runMigrate(ctx, rest)
	case "tenant":
		return m.runTenant(ctx, rest)
	case "dev":
		return m.runDev(ctx, rest)
	case "plugin":
		return m.runPlugin(ctx, rest)
	case "metrics-catalog": // hidden: read by deploy/validate
		return m.runMetricsCatalog(rest)
	case "version":
		fmt.Fprintf(m.Stdout, "promanage %s (%s)\n", version, revision)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(m.Stdout, usage)
		return nil
	}
	fmt.Fprint(m.Stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

// flags parses the common settings plus a command's own flags.
func (m *Main) flags(name string, args []string, extra func(fs *flag.FlagSet)) (*flag.FlagSet, error) {
	fs := flag.NewFlagSet("promanage "+name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	if err := m.Config.register(fs); err != nil {
		return nil, err
	}
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	m.setupLogging()
	return fs, nil
}

func (m *Main) setupLogging() {
	var level slog.Level
	switch strings.ToLower(m.Config.LogLevel) {
	case "debug":
		level = slog.LevelDebug
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(m.Stderr, opts)
	if m.Config.LogFormat == "text" {
		h = slog.NewTextHandler(m.Stderr, opts)
	}
	slog.SetDefault(slog.New(h).With("service", "promanage", "version", version))
}
