package main

import (
	"context"

	"github.com/promanage/promanage/api"
	"github.com/promanage/promanage/core"
)

// workDeps wires the work area's services into the API.
func (a *app) workDeps() api.WorkDeps { return api.WorkDeps{} }

// workConsumers are the work area's outbox consumers (by name).
func (a *app) workConsumers() map[string]core.Consumer { return nil }

// workJobs are the work area's background jobs run by the worker.
func (a *app) workJobs() []func(ctx context.Context) error { return nil }
