package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"github.com/promanage/promanage/api"
	"github.com/promanage/promanage/core"
	"github.com/promanage/promanage/tenant"
)

func (m *Main) runTenant(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: promanage tenant create|list|settings|suspend|resume|purge|export [flags]")
	}
	sub := args[0]
	var slug, name, owner, allowedTypes, out string
	var quota, maxFile int64
	if _, err := m.flags("tenant "+sub, args[1:], func(fs *flag.FlagSet) {
		fs.Int64Var(&quota, "set-quota-bytes", -1, "document storage quota in bytes; 0 = platform default (settings)")
		fs.Int64Var(&maxFile, "set-max-file-bytes", -1, "largest document version in bytes; 0 = platform default (settings)")
		fs.StringVar(&allowedTypes, "set-allowed-types", "-", `comma-separated media types or type/* allowed for documents; "" allows all (settings)`)
		fs.StringVar(&slug, "slug", "", "tenant slug")
		fs.StringVar(&name, "name", "", "tenant display name (create)")
		fs.StringVar(&owner, "owner", "", "owner's e-mail or user id; they must have signed in once (create)")
		fs.StringVar(&out, "out", "", "archive to write (.tar.gz); - = standard output (export)")
	}); err != nil {
		return err
	}
	a, err := openApp(ctx, m.Config)
	if err != nil {
		return err
	}
	defer a.close()
	if err := a.checkSchema(ctx); err != nil {
		return err
	}
	switch sub {
	case "list":
		ts, err := a.registry.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SLUG\tNAME\tSTATE\tSCHEMA\tVERSION\tID")
		for _, t := range ts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", t.Slug, t.Name, t.State, t.SchemaName, t.SchemaVersion, t.ID)
		}
		return tw.Flush()
	case "create":
		if slug == "" || owner == "" {
			return fmt.Errorf("tenant create needs -slug and -owner")
		}
		ownerID, err := findUser(ctx, a.db, owner)
		if err != nil {
			return err
		}
		svc := &core.TenantService{DB: a.db, Registry: a.registry, Events: a.events,
			Policies: &api.PolicyStore{Enforcers: a.enforcers, Notify: a.invalidator.Publish}}
		if name == "" {
			name = slug
		}
		t, err := svc.Create(ctx, core.Actor{UserID: ownerID, RequestID: "cli"}, slug, name)
		if err != nil {
			return err
		}
		fmt.Fprintf(m.Stdout, "created tenant %s (id %s, schema %s, version %d)\n", t.Slug, t.ID, t.SchemaName, t.SchemaVersion)
		return nil
	case "settings":
		if slug == "" {
			return fmt.Errorf("tenant settings needs -slug")
		}
		t, err := a.registry.BySlug(ctx, slug)
		if err != nil {
			return err
		}
		// Read and written under the tenant row's lock: an admin's
		// allowlist change meanwhile is kept.
		st, err := a.registry.UpdateStorageSettings(ctx, t.ID, func(st *tenant.StorageSettings) {
			if quota >= 0 {
				st.QuotaBytes = quota
			}
			if maxFile >= 0 {
				st.MaxFileBytes = maxFile
			}
			if allowedTypes != "-" {
				st.AllowedContentTypes = nil
				for _, ct := range strings.Split(allowedTypes, ",") {
					if ct = strings.TrimSpace(ct); ct != "" {
						st.AllowedContentTypes = append(st.AllowedContentTypes, ct)
					}
				}
			}
		})
		if err != nil {
			return err
		}
		a.invalidator.Publish(ctx, t.ID)
		b, _ := json.Marshal(st)
		fmt.Fprintf(m.Stdout, "tenant %s: storage settings %s (0 = platform default)\n", slug, b)
		return nil
	case "export":
		return m.exportTenant(ctx, a, slug, out)
	case "suspend", "resume", "purge":
		if slug == "" {
			return fmt.Errorf("tenant %s needs -slug", sub)
		}
		t, err := a.registry.BySlug(ctx, slug)
		if err != nil {
			return err
		}
		switch sub {
		case "suspend":
			err = a.registry.SetState(ctx, t.ID, tenant.StateSuspended)
		case "resume":
			err = a.registry.SetState(ctx, t.ID, tenant.StateActive)
		case "purge":
			// The same path as the worker's purge job: blobs, then schema.
			err = purgeTenant(ctx, a, t)
		}
		if err != nil {
			return err
		}
		a.invalidator.Publish(ctx, t.ID)
		fmt.Fprintf(m.Stdout, "tenant %s: %s done\n", slug, sub)
		return nil
	}
	return fmt.Errorf("unknown tenant command %q", sub)
}

func findUser(ctx context.Context, db *gorm.DB, who string) (uuid.UUID, error) {
	if id, err := uuid.Parse(who); err == nil {
		return id, nil
	}
	var ids []uuid.UUID
	if err := db.WithContext(ctx).Raw("SELECT id FROM public.users WHERE lower(email) = lower(?)", who).Scan(&ids).Error; err != nil {
		return uuid.Nil, err
	}
	if len(ids) == 0 {
		return uuid.Nil, errors.New("no user " + who + ": they must sign in once first")
	}
	return ids[0], nil
}
