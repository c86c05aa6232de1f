package main

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/promanage/promanage/tenant"
)

func TestSessionURL(t *testing.T) {
	const pooled, direct = "postgres://app@pgbouncer:6432/promanage", "postgres://app@postgres:5432/promanage"
	cases := []struct {
		name, pooler, url, directURL string
		want, wantErr                string
	}{
		{"DirectByDefault", "none", direct, "", direct, ""},
		{"SeparateDirectURL", "none", pooled, direct, direct, ""},
		{"PoolerWithDirectURL", "transaction", pooled, direct, direct, ""},
		{"PoolerWithoutDirectURL", "transaction", pooled, "", "", "PROMANAGE_DATABASE_DIRECT_URL"},
		{"PoolerWithTheSameURL", "transaction", pooled, pooled, "", "PROMANAGE_DATABASE_DIRECT_URL"},
		{"UnknownPooler", "session", direct, "", "", "want none or transaction"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := Config{DatabaseURL: c.url, DatabaseDirectURL: c.directURL, DBPooler: c.pooler}
			got, err := cfg.sessionURL()
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %q, %v; want an error naming %s", got, err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

func TestConnOptions(t *testing.T) {
	cfg := Config{DBStatementMode: "simple_protocol", DBPooler: "transaction"}
	o, err := cfg.connOptions()
	if err != nil || o.StatementMode != pgx.QueryExecModeSimpleProtocol || o.Pooler != tenant.PoolerTransaction {
		t.Fatalf("got %+v, %v", o, err)
	}
	for _, bad := range []Config{{DBStatementMode: "prepared", DBPooler: "none"}, {DBStatementMode: "exec", DBPooler: "pgbouncer"}} {
		if _, err := bad.connOptions(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestOpenRedisURLs(t *testing.T) {
	cases := []struct {
		name, url string
		cluster   bool
		wantErr   string
	}{
		{"Standalone", "redis://127.0.0.1:6379/3", false, ""},
		{"StandaloneTLS", "rediss://cache.example:6380/0", false, ""},
		{"Cluster", "redis+cluster://10.0.0.1:6379?addr=10.0.0.2:6379&addr=10.0.0.3:6379", true, ""},
		{"ClusterTLSWithPassword", "rediss+cluster://:s3cret@10.0.0.1:6379?addr=10.0.0.2:6379", true, ""},
		{"ClusterDatabaseZero", "redis+cluster://10.0.0.1:6379/0", true, ""},
		{"ClusterOtherDatabase", "redis+cluster://10.0.0.1:6379/2", false, "only database 0"},
		{"ClusterUnknownOption", "redis+cluster://10.0.0.1:6379?db=2", false, "unexpected option"},
		{"UnknownScheme", "memcache://10.0.0.1", false, "parse redis url"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc, err := openRedis(c.url)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			cc, isCluster := rc.(*redis.ClusterClient)
			if isCluster != c.cluster {
				t.Fatalf("cluster client: %v, want %v", isCluster, c.cluster)
			}
			if isCluster && cc.Options().ClusterStateReloadInterval != clusterStateReload {
				t.Fatalf("slot map re-read every %v, want %v", cc.Options().ClusterStateReloadInterval, clusterStateReload)
			}
		})
	}
}
