package main

import (
	"context"

	"github.com/promanage/promanage/api"
)

// accessDeps wires custom roles, rate limits, tokens and hooks into the API.
func (a *app) accessDeps() api.AccessDeps { return api.AccessDeps{} }

// accessJobs are background jobs of the access area (e.g. tenant purge).
func (a *app) accessJobs() []func(ctx context.Context) error { return nil }
