package main

import (
	"context"

	"github.com/promanage/promanage/api"
	"github.com/promanage/promanage/core"
)

// documentDeps wires the documents area's services into the API.
func (a *app) documentDeps() api.DocumentDeps { return api.DocumentDeps{} }

// documentConsumers are the documents area's outbox consumers (by name).
func (a *app) documentConsumers() map[string]core.Consumer { return nil }

// documentJobs are the documents area's background jobs run by the worker.
func (a *app) documentJobs() []func(ctx context.Context) error { return nil }
