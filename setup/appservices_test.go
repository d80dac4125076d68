package setup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/config"
)

// A registration's ip_range_whitelist takes addresses and CIDR ranges; a
// bad entry fails the start, naming the file.
func TestAppServiceIPRanges(t *testing.T) {
	write := func(ranges string) *config.Config {
		p := filepath.Join(t.TempDir(), "reg.yaml")
		data := "id: b\nurl: null\nas_token: a\nhs_token: h\nsender_localpart: bot\nip_range_whitelist: " + ranges + "\n"
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := config.Defaults("test.org")
		cfg.AppServiceConfigFiles = []string{p}
		return cfg
	}
	reg, err := appServiceRegistry(write(`["10.0.0.0/8", "192.168.1.7", "::1"]`))
	if err != nil {
		t.Fatal(err)
	}
	s := reg.ByID("b")
	for ip, want := range map[string]bool{"10.9.9.9": true, "192.168.1.7": true, "192.168.1.8": false, "::1": true, "11.0.0.1": false} {
		if got := s.AllowsIP(ip); got != want {
			t.Errorf("AllowsIP(%s) = %v, want %v", ip, got, want)
		}
	}
	cfg := write(`["10.0.0.0/33"]`)
	if _, err := appServiceRegistry(cfg); err == nil || !strings.Contains(err.Error(), cfg.AppServiceConfigFiles[0]) {
		t.Fatalf("bad range: %v", err)
	}
	if _, err := appServiceRegistry(write(`"10.0.0.0/8"`)); err == nil {
		t.Fatal("a string instead of a list was accepted")
	}
}
