package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The sample that generate-config writes loads back to the same values and
// is valid.
func TestProductionSampleRoundTrips(t *testing.T) {
	want := Production("example.org")
	want.OldSigningKeys = []OldSigningKey{{KeyID: "ed25519:old", PublicKey: "Ll0ZlwSsIsBjhYLgWVCb3Ucf1SLFBkV0NOexiYdHcic", ExpiredTS: 1700000000000}}
	want.NATS.URLs = []string{"nats://n1:4222", "nats://n2:4222"}
	out, err := want.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(out)
	if err != nil {
		t.Fatalf("parse generated config: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip changed the config:\n got %+v\nwant %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("generated config is invalid: %v", err)
	}
	if got.Registration.Enabled {
		t.Error("production config enables registration")
	}
	if got.Registration.SharedSecret == "" || got.Registration.SharedSecret == Production("example.org").Registration.SharedSecret {
		t.Error("production config must have a fresh random shared secret")
	}
	if !strings.HasPrefix(got.Listeners.HTTP.Address, "0.0.0.0:") {
		t.Errorf("production listener %q is not on all interfaces", got.Listeners.HTTP.Address)
	}
}

// Every option is documented, and the documentation is in the sample.
func TestEveryOptionHasAComment(t *testing.T) {
	out, err := Production("example.org").Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var check func(tp reflect.Type, path string)
	check = func(tp reflect.Type, path string) {
		for i := range tp.NumField() {
			f := tp.Field(i)
			doc := f.Tag.Get("doc")
			if doc == "" {
				t.Errorf("%s%s has no doc tag", path, f.Name)
				continue
			}
			if !strings.Contains(string(out), doc) {
				t.Errorf("%s%s: comment missing from the sample", path, f.Name)
			}
			ft := f.Type
			if ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(textUnmarshaler) {
				check(ft, path+f.Name+".")
			}
		}
	}
	check(reflect.TypeFor[Config](), "")
}

func TestUnknownKeyIsAnError(t *testing.T) {
	_, err := Parse([]byte("server_name: a.org\nregistration:\n  enabeld: true\n"))
	if err == nil || !strings.Contains(err.Error(), "enabeld") {
		t.Fatalf("err = %v, want unknown key enabeld", err)
	}
}

func TestEnvironmentOverrides(t *testing.T) {
	t.Setenv("MYELIN_DATABASE_URL", "postgres://u:p@db/myelin")
	t.Setenv("MYELIN_REGISTRATION_SHARED_SECRET", "s3cret")
	t.Setenv("MYELIN_REGISTRATION_ENABLED", "true")
	t.Setenv("MYELIN_RATE_LIMITING_ENABLED", "false")
	t.Setenv("MYELIN_RATE_LIMITING_LOGIN_PER_SECOND", "2.5")
	t.Setenv("MYELIN_NATS_URLS", "nats://a:4222, nats://b:4222")
	t.Setenv("MYELIN_AUTH_ACCESS_TOKEN_LIFETIME", "1h")
	t.Setenv("MYELIN_LISTENERS_HTTP_MAX_REQUEST_BYTES", "2M")
	c, err := Parse([]byte("server_name: a.org\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Database.URL != "postgres://u:p@db/myelin" || c.Registration.SharedSecret != "s3cret" ||
		!c.Registration.Enabled || c.RateLimiting.Enabled || c.RateLimiting.Login.PerSecond != 2.5 ||
		!reflect.DeepEqual(c.NATS.URLs, []string{"nats://a:4222", "nats://b:4222"}) ||
		c.Auth.AccessTokenLifetime != Duration(time.Hour) || c.Listeners.HTTP.MaxRequestBytes != 2<<20 {
		t.Fatalf("overrides not applied: %+v", c)
	}
	for _, name := range []string{"MYELIN_DATABASE_URL", "MYELIN_REGISTRATION_ENABLED", "MYELIN_REGISTRATION_SHARED_SECRET", "MYELIN_RATE_LIMITING_ENABLED"} {
		found := false
		for _, n := range EnvNames() {
			found = found || n == name
		}
		if !found {
			t.Errorf("%s is not a known override", name)
		}
	}
	t.Setenv("MYELIN_REGISTRATION_ENABLED", "maybe")
	if _, err := Parse([]byte("server_name: a.org\n")); err == nil || !strings.Contains(err.Error(), "MYELIN_REGISTRATION_ENABLED") {
		t.Fatalf("bad boolean: err = %v", err)
	}
}

// Validate names every problem with its key path, not just the first.
func TestValidateReportsEveryProblem(t *testing.T) {
	c := Defaults("not a server name!")
	c.Database.URL = "mysql://x"
	c.Auth.BcryptCost = 2
	c.Logging.Level = "loud"
	c.RateLimiting.Login.Burst = 0
	c.Listeners.FederationTLS.Address = ":8448"
	c.WellKnown.ClientBaseURL = "ftp://x"
	c.Metrics.Pprof = true // without metrics.enabled
	c.WellKnown.Support.SupportPage = "javascript:alert(1)"
	c.VoIP.TURNURIs = []string{"http://turn.example.org"}
	c.WellKnown.Support.Contacts = []SupportContact{{Role: "m.role.admin"}, {MatrixID: "admin", EmailAddress: "no at", Role: ""}}
	err := c.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, key := range []string{"server_name", "database.url", "auth.bcrypt_cost", "logging.level",
		"rate_limiting.login.burst", "listeners.federation_tls.cert_path", "listeners.federation_tls.key_path",
		"well_known.client_base_url", "metrics.pprof", "well_known.support.support_page", "well_known.support.contacts[0]",
		"well_known.support.contacts[1].role", "well_known.support.contacts[1].matrix_id", "well_known.support.contacts[1].email_address",
		"voip.turn_uris[0]", "voip.turn_shared_secret"} {
		if !strings.Contains(err.Error(), key+":") {
			t.Errorf("missing problem for %s in:\n%v", key, err)
		}
	}
}

func TestLoadResolvesRelativePaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "myelin.yaml")
	out, err := FirstRun().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.SigningKeyPath != filepath.Join(dir, "data/signing.key") || c.Database.URL != "sqlite:"+filepath.Join(dir, "data/myelin.db") {
		t.Fatalf("paths not resolved: %s %s", c.SigningKeyPath, c.Database.URL)
	}
	if !c.Registration.Enabled || c.ServerName != "localhost:8008" || c.Listeners.HTTP.Address != "127.0.0.1:8008" {
		t.Fatalf("first-run config: %+v", c)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"1024": 1024, "512K": 512 << 10, "50M": 50 << 20, "2G": 2 << 30, "3MB": 3 << 20} {
		var s ByteSize
		if err := s.UnmarshalText([]byte(in)); err != nil || s != want {
			t.Errorf("%s = %d, %v; want %d", in, s, err, want)
		}
	}
	var s ByteSize
	if err := s.UnmarshalText([]byte("lots")); err == nil {
		t.Error("want error for 'lots'")
	}
}

// Push gateways on private addresses are refused unless the file or
// MYELIN_PUSH_ALLOW_PRIVATE_ADDRESSES allows them.
func TestPushAllowPrivateAddresses(t *testing.T) {
	c, err := Parse([]byte("server_name: a.org\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Push.AllowPrivateAddresses {
		t.Fatal("private push gateways allowed by default")
	}
	out, err := Production("example.org").Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "\npush:\n") || !strings.Contains(string(out), "allow_private_addresses: false") {
		t.Fatalf("sample has no push section:\n%s", out)
	}
	if c, err = Parse([]byte("server_name: a.org\npush:\n  allow_private_addresses: true\n")); err != nil || !c.Push.AllowPrivateAddresses {
		t.Fatalf("from the file: %v, %+v", err, c.Push)
	}
	t.Setenv("MYELIN_PUSH_ALLOW_PRIVATE_ADDRESSES", "true")
	if c, err = Parse([]byte("server_name: a.org\n")); err != nil || !c.Push.AllowPrivateAddresses {
		t.Fatalf("from the environment: %v, %+v", err, c.Push)
	}
	if c.Federation.AllowPrivateAddresses {
		t.Fatal("the push override changed federation")
	}
	found := false
	for _, n := range EnvNames() {
		found = found || n == "MYELIN_PUSH_ALLOW_PRIVATE_ADDRESSES"
	}
	if !found {
		t.Error("MYELIN_PUSH_ALLOW_PRIVATE_ADDRESSES is not a known override")
	}
	t.Setenv("MYELIN_PUSH_ALLOW_PRIVATE_ADDRESSES", "yes please")
	if _, err := Parse([]byte("server_name: a.org\n")); err == nil || !strings.Contains(err.Error(), "MYELIN_PUSH_ALLOW_PRIVATE_ADDRESSES") {
		t.Fatalf("bad boolean: err = %v", err)
	}
}
