package signingkey

import (
	"crypto/ed25519"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteLoadRoundTrip(t *testing.T) {
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sub", "signing.key")
	if err := Write(path, k); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, k); err == nil {
		t.Fatal("Write overwrote an existing key")
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != k.ID || !got.Private.Equal(k.Private) {
		t.Fatalf("loaded %s, want %s", got.ID, k.ID)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
}

func TestLoadSynapseAndDendriteFormats(t *testing.T) {
	dir := t.TempDir()
	syn := filepath.Join(dir, "synapse.key")
	os.WriteFile(syn, []byte("ed25519 a_abcd YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n"), 0o600)
	k, err := Load(syn)
	if err != nil || k.ID != "ed25519:a_abcd" {
		t.Fatalf("synapse key: %v %v", k, err)
	}
	seed := make([]byte, ed25519.SeedSize)
	den := filepath.Join(dir, "dendrite.pem")
	os.WriteFile(den, pem.EncodeToMemory(&pem.Block{Type: "MATRIX PRIVATE KEY", Headers: map[string]string{"Key-ID": "ed25519:auto"}, Bytes: seed}), 0o600)
	k, err = Load(den)
	if err != nil || k.ID != "ed25519:auto" {
		t.Fatalf("dendrite key: %v %v", k, err)
	}
	bad := filepath.Join(dir, "bad.key")
	os.WriteFile(bad, []byte("rsa 1 2\n"), 0o600)
	if _, err := Load(bad); err == nil {
		t.Fatal("want error for a non-ed25519 key")
	}
}
