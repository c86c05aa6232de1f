package main

import (
	"context"

	"github.com/promanage/promanage/api"
	"github.com/promanage/promanage/core"
)

// pluginDeps wires the plugins area's services into the API.
func (a *app) pluginDeps() api.PluginDeps { return api.PluginDeps{} }

// pluginConsumers are the plugins area's outbox consumers (by name).
func (a *app) pluginConsumers() map[string]core.Consumer {
	return map[string]core.Consumer{
		// Notification plugins of the event's tenant: until the plugin
		// registry is wired, no tenant has any, so there is nothing to notify.
		"notifications": core.ConsumerFunc(func(ctx context.Context, d core.Delivery) error { return nil }),
	}
}

// pluginJobs are the plugins area's background jobs run by the worker.
func (a *app) pluginJobs() []func(ctx context.Context) error { return nil }

// validationHooks runs the tenants' validation plugins inside requests.
func (a *app) validationHooks() core.ValidationHooks { return core.ValidationHooks{} }
