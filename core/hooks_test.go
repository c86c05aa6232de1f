package core_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"

	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/internal/testenv"
	"github.com/promanage/promanage/tenant"
)

// patchRunner stands in for the plugin registry: it answers every
// project.validate with the configured patched input.
type patchRunner struct{ patch func(input map[string]any) }

func (r patchRunner) RunValidation(_ context.Context, _ uuid.UUID, req core.ValidationRequest) (core.Verdict, error) {
	in, err := requestJSON(req)
	if err != nil {
		return core.Verdict{}, err
	}
	input := in["input"].(map[string]any)
	r.patch(input)
	b, _ := json.Marshal(input)
	return core.Verdict{Allowed: true, Patched: b}, nil
}

// requestJSON is a request as the plugins' JSON shows it (ABI.md), decoded
// into maps: {"hook","operation","input","current","project"}.
func requestJSON(req core.ValidationRequest) (map[string]any, error) {
	b, err := json.Marshal(map[string]any{"hook": req.Hook, "operation": req.Operation, "input": req.Input,
		"current": req.Current, "project": req.Project})
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

// A validation plugin may normalise a project (its patch is applied), but
// the result is validated again: a patch cannot make a project invalid, and
// cannot change the key after creation.
func TestProjectValidationPatch(t *testing.T) {
	ctx := context.Background()
	db := testenv.DB(t)
	tn, err := tenant.NewRegistry(db, nil).Provision(ctx, tenant.ProvisionParams{Slug: testenv.Slug("patch"), Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	sc, actor := tn.Scope(), core.Actor{UserID: uuid.New()}
	trim := patchRunner{patch: func(in map[string]any) {
		in["name"] = "Normalised: " + in["name"].(string)
		in["key"] = "PATCHED"
	}}
	svc := &core.ProjectService{DB: db, Hooks: core.ValidationHooks{Runner: trim}}
	p, err := svc.Create(ctx, sc, actor, core.ProjectInput{Key: "RAW", Name: "site"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "Normalised: site" || p.Key != "PATCHED" {
		t.Fatalf("create: patch not applied: %+v", p)
	}
	got, err := svc.Get(ctx, sc, p.ID)
	if err != nil || got.Name != "Normalised: site" {
		t.Fatalf("stored project: %+v %v", got, err)
	}
	name := "again"
	up, err := svc.Update(ctx, sc, actor, p.ID, p.Version, core.ProjectUpdate{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	if up.Name != "Normalised: again" || up.Key != "PATCHED" {
		t.Fatalf("update: %+v (key must not change after creation)", up)
	}

	breaker := &core.ProjectService{DB: db, Hooks: core.ValidationHooks{Runner: patchRunner{patch: func(in map[string]any) {
		in["status"] = "exploded"
	}}}}
	if _, err := breaker.Create(ctx, sc, actor, core.ProjectInput{Key: "BAD", Name: "x"}); core.ErrorCode(err) != core.EINVALID {
		t.Fatalf("an invalid patch was accepted: %v", err)
	}
	page, err := svc.List(ctx, sc, core.ProjectFilter{})
	if err != nil || len(page.Items) != 1 {
		t.Fatalf("the refused project was stored: %d items, %v", len(page.Items), err)
	}
}
