package config

import (
	"reflect"
	"strings"
	"testing"
)

// The memory settings have bounded defaults for a small machine, load from
// the file and the environment, and out-of-range values are refused with
// their key.
func TestMemorySettings(t *testing.T) {
	c, err := Parse([]byte("server_name: a.org\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if c.MemoryLimit != 0 {
		t.Errorf("memory_limit default %d, want 0 (the runtime's GOMEMLIMIT)", c.MemoryLimit)
	}
	if c.Database.SQLiteCacheSize != 2<<20 || c.NATS.MaxMemory != 16<<20 || c.NATS.MaxStore != 0 {
		t.Errorf("defaults: sqlite_cache_size %d, nats.max_memory %d, nats.max_store %d", c.Database.SQLiteCacheSize, c.NATS.MaxMemory, c.NATS.MaxStore)
	}
	v := reflect.ValueOf(c.Caches)
	for i := range v.NumField() {
		if n := v.Field(i).Int(); n < 1 || n > 1<<17 {
			t.Errorf("caches.%s default %d is not a small bound", yamlKey(v.Type().Field(i)), n)
		}
	}

	c, err = Parse([]byte("server_name: a.org\nmemory_limit: 64M\ndatabase:\n  sqlite_cache_size: 512K\n" +
		"caches:\n  room_events: 500\n  state_snapshot_entries: 1000\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.MemoryLimit != 64<<20 || c.Database.SQLiteCacheSize != 512<<10 || c.Caches.RoomEvents != 500 ||
		c.Caches.StateSnapshots != 1000 || c.Caches.PushRules != DefaultCaches().PushRules {
		t.Fatalf("from the file: %+v %+v %d", c.Caches, c.Database, c.MemoryLimit)
	}
	t.Setenv("MYELIN_MEMORY_LIMIT", "1G")
	t.Setenv("MYELIN_CACHES_PUSH_RULES", "50")
	t.Setenv("MYELIN_NATS_MAX_MEMORY", "8M")
	if c, err = Parse([]byte("server_name: a.org\n")); err != nil || c.MemoryLimit != 1<<30 || c.Caches.PushRules != 50 || c.NATS.MaxMemory != 8<<20 {
		t.Fatalf("from the environment: %v %d %+v", err, c.MemoryLimit, c.Caches)
	}
	t.Setenv("MYELIN_CACHES_PUSH_RULES", "many")
	if _, err := Parse([]byte("server_name: a.org\n")); err == nil || !strings.Contains(err.Error(), "MYELIN_CACHES_PUSH_RULES") {
		t.Fatalf("bad integer: err = %v", err)
	}
}

func TestMemorySettingsValidation(t *testing.T) {
	c := Defaults("a.org")
	c.MemoryLimit = 1 << 20
	c.Caches.RoomEvents = 0
	c.Caches.StateKeys = -5
	c.Caches.ServerDiscovery = 0
	c.Database.SQLiteCacheSize = 1000
	c.NATS.MaxMemory = 0
	c.NATS.MaxStore = 10
	err := c.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, key := range []string{"memory_limit", "caches.room_events", "caches.state_keys", "caches.server_discovery",
		"database.sqlite_cache_size", "nats.max_memory", "nats.max_store"} {
		if !strings.Contains(err.Error(), key+":") {
			t.Errorf("missing problem for %s in:\n%v", key, err)
		}
	}
	if strings.Contains(err.Error(), "caches.push_rules") {
		t.Errorf("a valid cache size refused:\n%v", err)
	}
	c = Defaults("a.org")
	c.MemoryLimit = 16 << 20
	c.NATS.MaxStore = 1 << 30
	if err := c.Validate(); err != nil {
		t.Fatalf("valid settings refused: %v", err)
	}
	if _, err := Parse([]byte("server_name: a.org\nmemory_limit: -5M\n")); err == nil {
		t.Fatal("a negative memory_limit was accepted")
	}
}
