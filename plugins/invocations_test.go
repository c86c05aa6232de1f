package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/promanage/promanage/internal/testenv"
)

type storedInvocation struct {
	ID      uuid.UUID `gorm:"column:id"`
	Message string    `gorm:"column:message"`
	Error   string    `gorm:"column:error"`
	Result  *string   `gorm:"column:result"`
	Logs    string    `gorm:"column:logs"`
}

func storedInvocations(t *testing.T, r *Registry, tenantID uuid.UUID) []storedInvocation {
	t.Helper()
	var rows []storedInvocation
	err := r.db.Raw(`SELECT id, message, error, result::text AS result, logs::text AS logs
		FROM public.plugin_invocations WHERE tenant_id = ? ORDER BY id`, tenantID).Scan(&rows).Error
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// A plugin's message, error and log lines with NUL bytes and invalid UTF-8
// are stored (sanitised) in the same batch as other tenants' records, and
// none of them is lost.
func TestInvocationRecorderSanitises(t *testing.T) {
	db := testenv.DB(t)
	r := NewRegistry(db, nil, nil, nil)
	t.Cleanup(func() { r.Close(context.Background()) })
	hostile, other := uuid.New(), uuid.New()
	plugin := uuid.New()
	bad := "nul\x00here \xff\xfe end"
	inv := &Invocation{Hook: "project.validate", Logs: []string{"info: " + bad, "stdout: fine"}, Duration: time.Millisecond}
	for i := 0; i < 3; i++ {
		r.record(other, plugin, 1, "project.validate", inv, &ValidationResult{Allow: true}, nil, nil, false, nil)
	}
	r.record(hostile, plugin, 1, "project.validate", inv, &ValidationResult{Allow: false, Message: bad,
		Patch: json.RawMessage(`{"name":"a\u0000b"}`)}, nil, nil, false, nil)
	r.record(hostile, plugin, 1, "project.validate", inv, nil, nil, errors.New("plugin trapped: "+bad), false, nil)
	r.Flush(ctxTimeout(t, 10*time.Second))

	if got := storedInvocations(t, r, other); len(got) != 3 {
		t.Fatalf("other tenant: %d records stored, want 3", len(got))
	}
	got := storedInvocations(t, r, hostile)
	if len(got) != 2 {
		t.Fatalf("hostile tenant: %d records stored, want 2", len(got))
	}
	for _, row := range got {
		text := row.Message + row.Error + row.Logs
		if row.Result != nil {
			text += *row.Result
		}
		if strings.Contains(text, "\x00") || strings.Contains(text, `\u0000`) {
			t.Errorf("record %s still holds a NUL: %q", row.ID, text)
		}
		if !strings.Contains(row.Logs, "nul\uFFFDhere \uFFFD") {
			t.Errorf("logs %q: want the NUL and the invalid bytes replaced by U+FFFD", row.Logs)
		}
	}
	if !strings.Contains(got[0].Message, "nul\uFFFDhere") || got[0].Result == nil || !strings.Contains(*got[0].Result, "a\uFFFDb") {
		t.Errorf("rejection record: message %q, result %v", got[0].Message, got[0].Result)
	}
	if !strings.Contains(got[1].Error, "plugin trapped: nul\uFFFDhere") {
		t.Errorf("failure record: error %q", got[1].Error)
	}
}

// A row PostgreSQL refuses (here: logs that are not JSON, which record
// never produces) is dropped alone; the rest of its batch is written.
func TestInvocationRecorderKeepsGoodRowsOfABadBatch(t *testing.T) {
	db := testenv.DB(t)
	r := NewRegistry(db, nil, nil, nil)
	t.Cleanup(func() { r.Close(context.Background()) })
	tenantID := uuid.New()
	row := func(logs string) invocationRow {
		return invocationRow{ID: uuid.Must(uuid.NewV7()), TenantID: tenantID, PluginID: uuid.New(), Version: 1,
			Hook: "project.validate", Outcome: OutcomeAllowed, Logs: logs, CreatedAt: time.Now().UTC()}
	}
	r.rec.add(row("[]"))
	r.rec.add(row("not json"))
	r.rec.add(row(`["info: ok"]`))
	r.Flush(ctxTimeout(t, 10*time.Second))
	if got := storedInvocations(t, r, tenantID); len(got) != 2 {
		t.Fatalf("%d records stored, want the 2 good ones", len(got))
	}
}
