// Package signingkey reads and writes the server's ed25519 signing key.
//
// The file format is Synapse's: one line "ed25519 <version> <seed>", with the
// 32-byte seed in unpadded base64, so keys move between Synapse and Myelin.
// Dendrite's PEM format ("MATRIX PRIVATE KEY" with a Key-ID header) is read
// too.
package signingkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Key is a signing key and its ID ("ed25519:<version>").
type Key struct {
	ID      string
	Private ed25519.PrivateKey
}

// Public returns the verify key.
func (k *Key) Public() ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

// Generate returns a new key with a random version "a_XXXX".
func Generate() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	var v [3]byte
	if _, err := rand.Read(v[:]); err != nil {
		return nil, err
	}
	version := "a_" + strings.NewReplacer("-", "A", "_", "B").Replace(base64.RawURLEncoding.EncodeToString(v[:]))
	return &Key{ID: "ed25519:" + version, Private: priv}, nil
}

// Load reads a key file in Synapse or Dendrite format.
func Load(path string) (*Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "MATRIX PRIVATE KEY" || len(block.Bytes) != ed25519.SeedSize {
			return nil, fmt.Errorf("%s: not a MATRIX PRIVATE KEY", path)
		}
		id := block.Headers["Key-ID"]
		if !strings.HasPrefix(id, "ed25519:") {
			return nil, fmt.Errorf("%s: Key-ID %q is not ed25519:<version>", path, id)
		}
		return &Key{ID: id, Private: ed25519.NewKeyFromSeed(block.Bytes)}, nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) != 3 || f[0] != "ed25519" {
			return nil, fmt.Errorf("%s: want a line \"ed25519 <version> <seed>\"", path)
		}
		seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(f[2], "="))
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("%s: the seed is not 32 bytes of base64", path)
		}
		return &Key{ID: "ed25519:" + f[1], Private: ed25519.NewKeyFromSeed(seed)}, nil
	}
	return nil, fmt.Errorf("%s: no key found", path)
}

// Write stores k at path (mode 0600), creating its directory. It refuses to
// overwrite an existing file.
func Write(path string, k *Key) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	version := strings.TrimPrefix(k.ID, "ed25519:")
	_, err = fmt.Fprintf(f, "ed25519 %s %s\n", version, base64.RawStdEncoding.EncodeToString(k.Private.Seed()))
	return errors.Join(err, f.Close())
}
