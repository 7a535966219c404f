package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgoutbox/pgoutbox/cmd/pgoutbox/internal/config"
)

const multi = `
database:
  url: postgres://relay@db1:5432/shop
delivery: {max_attempts: 7, lanes: 4}
routes:
  orders: {kafka: {topic: orders.v1}}
  audit: {stdout: {}}
kafka: {brokers: ["k:9092"]}
http: {listen: "127.0.0.1:9100"}
outboxes:
  - name: shop
    schema: shop
  - name: billing
    schema: billing
    delivery: {max_attempts: 3}
    routes:
      orders: {webhook: {url: "https://billing.internal/hooks"}}
  - name: crm
    database:
      url: postgres://relay@db2:5432/crm
      password_file: PWFILE
    schema: shop
    slot: crm_slot
`

func writeMulti(t *testing.T, yaml string) string {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(yaml, "PWFILE", pw)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Each entry of outboxes is decoded over the top level: what it sets wins, what it does not set comes
// from the top level (file, environment, flags); routes merge per destination.
func TestOutboxesInheritTheTopLevel(t *testing.T) {
	t.Parallel()
	c, err := config.Load(config.Source{File: writeMulti(t, multi), Env: []string{"PGOUTBOX_DELIVERY_BATCH_SIZE=50"},
		Set: []string{"delivery.lanes=2", "outboxes.crm.delivery.lanes=9"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(config.Names(c.Outboxes), ","); got != "shop,billing,crm" {
		t.Fatalf("outboxes = %s", got)
	}
	shop, billing, crm := c.Outboxes[0], c.Outboxes[1], c.Outboxes[2]
	if shop.Database.URL != "postgres://relay@db1:5432/shop" || shop.Delivery.MaxAttempts != 7 || shop.Delivery.Lanes != 2 ||
		shop.Delivery.BatchSize != 50 || shop.SlotName() != "pgoutbox_shop" {
		t.Errorf("shop inherits: %+v", shop)
	}
	if billing.Delivery.MaxAttempts != 3 || billing.Delivery.Lanes != 2 || billing.Routes["orders"].Kind() != "webhook" ||
		billing.Routes["audit"].Kind() != "stdout" {
		t.Errorf("billing overrides: delivery %+v routes %+v", billing.Delivery, billing.Routes)
	}
	if shop.Routes["orders"].Kind() != "kafka" {
		t.Errorf("billing's route leaked into shop: %+v", shop.Routes)
	}
	dsn, err := crm.DSN()
	if err != nil || !strings.Contains(dsn, "s3cret") || crm.Delivery.Lanes != 9 || crm.SlotName() != "crm_slot" {
		t.Errorf("crm: dsn %v (%v), lanes %d, slot %s", config.RedactDSN(dsn), err, crm.Delivery.Lanes, crm.SlotName())
	}
	if _, err := c.Outbox(""); err == nil || !strings.Contains(err.Error(), "--outbox") {
		t.Errorf("Outbox(\"\") with three outboxes: %v, want an error asking for --outbox", err)
	}
	if o, err := c.Outbox("billing"); err != nil || o.Schema != "billing" {
		t.Errorf("Outbox(billing) = %s, %v", o.Schema, err)
	}
	if _, err := c.Outbox("nope"); err == nil || !strings.Contains(err.Error(), "shop, billing, crm") {
		t.Errorf("Outbox(nope): %v", err)
	}
}

// Without an outboxes list the configuration is one outbox, named by its schema (or name).
func TestSingleOutboxIsImplicit(t *testing.T) {
	t.Parallel()
	c, err := config.Parse(strings.NewReader(base+"schema: app\n"), "x")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Outboxes) != 1 || c.Outboxes[0].Name != "app" || c.Outboxes[0].Schema != "app" {
		t.Fatalf("outboxes = %+v", config.Names(c.Outboxes))
	}
	if o, err := c.Outbox(""); err != nil || o.Name != "app" {
		t.Errorf("Outbox(\"\") = %q, %v", o.Name, err)
	}
	c, err = config.Parse(strings.NewReader(base+"name: orders\n"), "x")
	if err != nil || c.Outboxes[0].Name != "orders" {
		t.Errorf("name: orders → %v, %v", config.Names(c.Outboxes), err)
	}
}

func TestOutboxesErrors(t *testing.T) {
	t.Parallel()
	entry := func(s string) string { return base + "outboxes:\n" + s }
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"no name", entry("  - schema: a\n"), []string{"outboxes[0].name", "required"}},
		{"bad name", entry("  - {name: \"a b\", schema: a}\n"), []string{"outboxes[0].name", "outbox name"}},
		{"duplicate name", entry("  - {name: a, schema: a}\n  - {name: a, schema: b}\n"), []string{"outboxes[1].name", "two outboxes"}},
		{"process key", entry("  - {name: a, http: {listen: \":1\"}}\n"), []string{"outboxes[0].http", "whole process"}},
		{"unknown key", entry("  - {name: a, shema: b}\n"), []string{"outboxes[0].shema", "unknown key"}},
		{"not a list", base + "outboxes: {a: 1}\n", []string{"outboxes", "list"}},
		{"empty list", base + "outboxes: []\n", []string{"outboxes", "non-empty"}},
		{"top-level name", base + "name: x\noutboxes:\n  - {name: a}\n", []string{"name", "each outbox"}},
		{"same schema twice", entry("  - {name: a, schema: s}\n  - {name: b, schema: s, slot: other}\n"),
			[]string{"a and b both stream schema s"}},
		{"same slot on one server", entry("  - {name: a, schema: s, slot: x}\n  - {name: b, schema: t, slot: x}\n"),
			[]string{"a and b both use slot x"}},
		{"one outbox invalid", entry("  - {name: a, schema: s}\n  - {name: b, schema: t, delivery: {lanes: 0}}\n"),
			[]string{"outbox b: config: delivery.lanes"}},
		{"every outbox invalid once", base + "delivery: {lanes: 0}\noutboxes:\n  - {name: a, schema: s}\n  - {name: b, schema: t}\n",
			[]string{"config: delivery.lanes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Parse(strings.NewReader(tt.yaml), "test.yaml")
			if err == nil {
				t.Fatalf("no error for:\n%s", tt.yaml)
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if tt.name == "every outbox invalid once" && strings.Count(err.Error(), "delivery.lanes") != 1 {
				t.Errorf("an error of the top level is reported once, not per outbox: %q", err)
			}
		})
	}
	_, err := config.Load(config.Source{Set: []string{"database.url=postgres://x/y", "outboxes.a.schema=b"}})
	if err == nil || !strings.Contains(err.Error(), "no outboxes list") {
		t.Errorf("outboxes.<name> without a list: %v", err)
	}
	_, err = config.Load(config.Source{File: writeMulti(t, multi), Set: []string{"outboxes.nope.schema=b"}})
	if err == nil || !strings.Contains(err.Error(), `no outbox named "nope"`) {
		t.Errorf("outboxes.nope: %v", err)
	}
}
