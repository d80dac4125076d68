package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// EnvPrefix starts every environment override.
const EnvPrefix = "MYELIN_"

// Load reads the file at path over Defaults, applies MYELIN_* environment
// overrides, and resolves relative paths against the file's directory. It
// does not validate; call Validate.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	c.resolvePaths(dir)
	return c, nil
}

// Parse decodes YAML over Defaults (unknown keys are errors) and applies the
// environment overrides.
func Parse(data []byte) (*Config, error) {
	c := Defaults("")
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if err := c.applyEnv(os.LookupEnv); err != nil {
		return nil, err
	}
	return c, nil
}

// Marshal writes c as YAML with every option commented.
func (c *Config) Marshal() ([]byte, error) {
	node, err := docNode(reflect.ValueOf(c).Elem())
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{node},
		HeadComment: "Myelin homeserver configuration. Every key can be overridden from the\n" +
			"environment as MYELIN_<PATH>, upper case, nesting joined by _ (e.g. MYELIN_DATABASE_URL)."}
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

// docNode builds a YAML mapping from a struct, with each key's doc tag as its
// comment.
func docNode(v reflect.Value) (*yaml.Node, error) {
	n := &yaml.Node{Kind: yaml.MappingNode}
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key := yamlKey(f)
		if key == "" {
			continue
		}
		k := &yaml.Node{Kind: yaml.ScalarNode, Value: key, HeadComment: f.Tag.Get("doc")}
		var val *yaml.Node
		fv := v.Field(i)
		if et := f.Type; et.Kind() == reflect.Slice && et.Elem().Kind() == reflect.Struct {
			// List entries may be absent from the sample: document their keys here.
			k.HeadComment += "\nEach entry has:"
			for j := range et.Elem().NumField() {
				ef := et.Elem().Field(j)
				k.HeadComment += "\n  " + yamlKey(ef) + ": " + ef.Tag.Get("doc")
			}
		}
		if fv.Kind() == reflect.Struct && !isText(fv) {
			sub, err := docNode(fv)
			if err != nil {
				return nil, err
			}
			val = sub
		} else {
			val = &yaml.Node{}
			if err := val.Encode(fv.Interface()); err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			if val.Kind == yaml.SequenceNode && len(val.Content) == 0 {
				val.Style = yaml.FlowStyle
			}
		}
		n.Content = append(n.Content, k, val)
	}
	return n, nil
}

func yamlKey(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

func isText(v reflect.Value) bool {
	return v.CanAddr() && v.Addr().Type().Implements(textUnmarshaler) ||
		reflect.PointerTo(v.Type()).Implements(textUnmarshaler)
}

// EnvNames lists every environment variable that can override a key.
func EnvNames() []string {
	var out []string
	walkLeaves(reflect.ValueOf(Defaults("")).Elem(), nil, func(path []string, _ reflect.Value) {
		out = append(out, envName(path))
	})
	return out
}

func envName(path []string) string {
	return EnvPrefix + strings.ToUpper(strings.Join(path, "_"))
}

// applyEnv sets every leaf whose MYELIN_<PATH> variable is set.
func (c *Config) applyEnv(lookup func(string) (string, bool)) error {
	var errs []error
	walkLeaves(reflect.ValueOf(c).Elem(), nil, func(path []string, v reflect.Value) {
		name := envName(path)
		s, ok := lookup(name)
		if !ok {
			return
		}
		if err := setFromString(v, s); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	})
	return errors.Join(errs...)
}

// walkLeaves calls fn for every settable leaf (non-struct, or a struct with
// text decoding) with its key path. Slices of structs are not leaves and are
// skipped: they can only be set in the file.
func walkLeaves(v reflect.Value, path []string, fn func([]string, reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		key := yamlKey(t.Field(i))
		if key == "" {
			continue
		}
		fv := v.Field(i)
		p := append(append([]string(nil), path...), key)
		switch {
		case fv.Kind() == reflect.Struct && !isText(fv):
			walkLeaves(fv, p, fn)
		case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() != reflect.String:
			// complex lists only in the file
		default:
			fn(p, fv)
		}
	}
}

func setFromString(v reflect.Value, s string) error {
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return u.UnmarshalText([]byte(s))
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("invalid boolean %q", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		v.SetInt(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("invalid number %q", s)
		}
		v.SetFloat(f)
	case reflect.Slice:
		var items []string
		for _, it := range strings.Split(s, ",") {
			if it = strings.TrimSpace(it); it != "" {
				items = append(items, it)
			}
		}
		v.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}

// resolvePaths makes relative file paths relative to dir.
func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.SigningKeyPath)
	abs(&c.Federation.CACertsPath)
	for i := range c.AppServiceConfigFiles {
		abs(&c.AppServiceConfigFiles[i])
	}
	abs(&c.NATS.StoreDir)
	abs(&c.Media.StorePath)
	abs(&c.Listeners.FederationTLS.CertPath)
	abs(&c.Listeners.FederationTLS.KeyPath)
	for _, prefix := range []string{"sqlite:", "file:"} {
		if rest, ok := strings.CutPrefix(c.Database.URL, prefix); ok {
			abs(&rest)
			c.Database.URL = "sqlite:" + rest
		}
	}
}
