// Command webhook-notifier is an example ProManage plugin (Go, built with
// the pdk as a WASI reactor). It turns the events it is subscribed to into
// one signed webhook each, posted to the URL in its config. The host refuses
// the delivery unless the URL's host is in the plugin's allowed_hosts.
//
// Config: {"url": "https://hooks.example.com/promanage",
//
//	"format": "json" (default) or "text" (a Slack-style {"text": ...} body),
//	"headers": {"X-Team": "infra"}}
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/promanage/promanage/plugins/pdk"
)

type config struct {
	URL     string            `json:"url"`
	Format  string            `json:"format"`
	Headers map[string]string `json:"headers"`
}

var hooks = []string{
	"project.created", "project.updated", "project.deleted", "task.done",
	"expense.recorded", "budget.threshold_crossed", "deadline.approaching",
	"project.overdue", "document.uploaded", "member.added",
}

func init() {
	for _, h := range hooks {
		pdk.OnNotify(h, notify)
	}
}

func notify(in *pdk.NotificationInput) (pdk.NotificationResult, error) {
	var c config
	if err := in.DecodeConfig(&c); err != nil {
		return pdk.NotificationResult{}, err
	}
	if c.URL == "" {
		return pdk.NotificationResult{}, errors.New("config: url is required")
	}
	summary := summarize(&in.Event)
	var body json.RawMessage
	var err error
	switch c.Format {
	case "", "json":
		body, err = pdk.JSONBody(map[string]any{
			"event_id":    in.Event.ID,
			"event_type":  in.Event.Type,
			"tenant":      in.Tenant,
			"occurred_at": in.Event.OccurredAt,
			"summary":     summary,
			"data":        in.Event.Data,
		})
	case "text":
		body, err = pdk.JSONBody(map[string]string{"text": summary})
	default:
		return pdk.NotificationResult{}, fmt.Errorf("config: unknown format %q", c.Format)
	}
	if err != nil {
		return pdk.NotificationResult{}, err
	}
	pdk.Logf(pdk.LevelInfo, "%s -> %s", in.Event.Type, c.URL)
	return pdk.NotificationResult{Deliveries: []pdk.Delivery{{
		URL: c.URL, Method: "POST", Headers: c.Headers, Body: body,
	}}}, nil
}

// summarize writes one human line about the event from the fields most
// events carry.
func summarize(e *pdk.Event) string {
	var d struct {
		Key     string `json:"key"`
		Name    string `json:"name"`
		Title   string `json:"title"`
		Project *struct {
			Key  string `json:"key"`
			Name string `json:"name"`
		} `json:"project"`
		Percent  int    `json:"percent"`
		Deadline string `json:"deadline"`
	}
	_ = e.DecodeData(&d) // best effort: unknown shapes still get a line
	subject := strings.TrimSpace(d.Key + " " + d.Name)
	if d.Title != "" {
		subject = d.Title
	}
	if d.Project != nil {
		project := strings.TrimSpace(d.Project.Key + " " + d.Project.Name)
		if subject == "" {
			subject = project
		} else if project != "" {
			subject = project + ": " + subject
		}
	}
	switch e.Type {
	case "budget.threshold_crossed":
		return fmt.Sprintf("[%s] budget %d%% used: %s", e.Tenant, d.Percent, subject)
	case "deadline.approaching":
		return fmt.Sprintf("[%s] deadline %s approaching: %s", e.Tenant, d.Deadline, subject)
	default:
		return fmt.Sprintf("[%s] %s: %s", e.Tenant, e.Type, subject)
	}
}

func main() {}
