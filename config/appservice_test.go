package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAppServiceRegistrations(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", `id: bridge
url: http://127.0.0.1:9000
as_token: as1
hs_token: hs1
sender_localpart: bridgebot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: "@bridge_.*:example.org"
  aliases: []
  rooms: []
de.sorunome.msc2409.push_ephemeral: true
`)
	c := Defaults("example.org")
	c.AppServiceConfigFiles = []string{good}
	as, err := c.LoadAppServices()
	if err != nil || len(as) != 1 || as[0].ID != "bridge" || *as[0].URL != "http://127.0.0.1:9000" || len(as[0].Namespaces.Users) != 1 {
		t.Fatalf("good registration: %+v %v", as, err)
	}
	bad := write("bad.yaml", `id: ""
as_token: as2
namespaces:
  users:
    - regex: "(unclosed"
`)
	dup := write("dup.yaml", "id: bridge\nurl: null\nas_token: as1\nhs_token: hs3\nsender_localpart: x\n")
	c.AppServiceConfigFiles = []string{good, bad, dup, filepath.Join(dir, "missing.yaml")}
	_, err = c.LoadAppServices()
	for _, want := range []string{"id must be set", "url must be set", "hs_token must be set", "sender_localpart must be set", "regex", "also used by", "missing.yaml"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("errors %v lack %q", err, want)
		}
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "app_service_config_files") {
		t.Fatalf("Validate: %v", err)
	}
}
