package tests

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const module = "github.com/myelin-chat/myelin"

// components and the prefix of the tables each owns.
var components = map[string]string{
	"clientapi":     "cs_",
	"roomserver":    "rs_",
	"federationapi": "fed_",
	"syncapi":       "sync_",
	"mediaapi":      "media_",
	"userapi":       "user_",
	"appservice":    "as_",
}

type goPackage struct {
	ImportPath   string
	Dir          string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func listPackages(t *testing.T) []goPackage {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []goPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p goPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// area splits a package path into its top-level directory and the rest.
func area(pkg string) (top, rest string) {
	rel := strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")
	top, rest, _ = strings.Cut(rel, "/")
	return top, rest
}

// allowed reports whether from may import to under DESIGN.md section 2:
// cmd -> setup -> components -> other components' api -> internal.
func allowed(from, to string) bool {
	ft, frest := area(from)
	tt, trest := area(to)
	isAPI := func(rest string) bool { return rest == "api" || strings.HasPrefix(rest, "api/") }
	switch {
	case tt == "internal":
		return true // internal packages are leaves that anyone (including each other) may use
	case ft == "internal" || ft == "config":
		return false // leaves import no component (config may only use internal)
	case ft == "tests":
		return tt != "cmd"
	case ft == "cmd":
		return tt == "setup" || tt == "config"
	case ft == "setup":
		return tt != "cmd" && tt != "tests"
	}
	if _, ok := components[ft]; ok {
		if _, ok := components[tt]; !ok {
			return false // not setup, cmd, config or tests
		}
		if isAPI(frest) {
			return tt != ft && isAPI(trest) // api packages only use other api packages
		}
		return tt == ft || isAPI(trest)
	}
	return false
}

func TestDependencyRules(t *testing.T) {
	for _, p := range listPackages(t) {
		top, _ := area(p.ImportPath)
		imports := p.Imports
		if top != "tests" {
			imports = append(append(append([]string(nil), imports...), p.TestImports...), p.XTestImports...)
		}
		for _, imp := range imports {
			if !strings.HasPrefix(imp, module+"/") || imp == p.ImportPath {
				continue
			}
			if !allowed(p.ImportPath, imp) {
				t.Errorf("%s imports %s: not allowed by the dependency rules", p.ImportPath, imp)
			}
		}
	}
}

// TestBinaryDoesNotLinkTesting checks that no package the server binary
// depends on imports "testing" (test helpers live in packages only tests
// import, such as internal/sqlutil/sqltest), so the binary carries neither
// its code nor its flags.
func TestBinaryDoesNotLinkTesting(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"/cmd/myelin").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, " ")
		for _, imp := range strings.Fields(imports) {
			if imp == "testing" || strings.HasPrefix(imp, "testing/") {
				t.Errorf("%s (a dependency of cmd/myelin) imports %s", pkg, imp)
			}
		}
	}
}

func TestRuleCheckerRejectsUpwardImports(t *testing.T) {
	for _, tc := range []struct {
		from, to string
		ok       bool
	}{
		{"internal/httputil", "userapi/api", false},
		{"internal/testutil", "setup", false},
		{"clientapi", "userapi", false},
		{"clientapi", "userapi/api", true},
		{"clientapi/storage", "internal/sqlutil", true},
		{"userapi/api", "userapi", false},
		{"userapi/api", "syncapi/api", true},
		{"syncapi", "setup", false},
		{"cmd/myelin", "clientapi", false},
		{"cmd/myelin", "setup", true},
		{"setup", "clientapi", true},
		{"config", "userapi/api", false},
	} {
		if got := allowed(module+"/"+tc.from, module+"/"+tc.to); got != tc.ok {
			t.Errorf("allowed(%s -> %s) = %v, want %v", tc.from, tc.to, got, tc.ok)
		}
	}
}

var tableRef = regexp.MustCompile(`(?i)\b(?:FROM|JOIN|INTO|UPDATE|TABLE(?: IF NOT EXISTS)?|ON)\s+([a-z][a-z0-9_]*)\s*[\s(]`)

// No component touches another's tables: every table a component's SQL
// names carries its own prefix.
func TestComponentsUseOnlyTheirTables(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for comp, prefix := range components {
		dir := filepath.Join(root, comp)
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			continue
		}
		err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".go") || strings.HasSuffix(path, ".sql")) {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			// Comments are prose ("valid from from_pos"), not SQL.
			code := lineComment.ReplaceAllString(string(data), "")
			for _, m := range tableRef.FindAllStringSubmatch(code, -1) {
				name := strings.ToLower(m[1])
				if !strings.Contains(name, "_") || keywords[name] {
					continue // not a table of ours (SELECT, a column in ON CONFLICT...)
				}
				found++
				if !strings.HasPrefix(name, prefix) {
					t.Errorf("%s names table %q, which is not %s's (prefix %s)", path, name, comp, prefix)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if found < 20 {
		t.Fatalf("found only %d table references: is the pattern broken?", found)
	}
}

var lineComment = regexp.MustCompile(`(?m)(--|//).*$`)

var keywords = map[string]bool{"user_id": true, "device_id": true, "room_id": true, "event_id": true}
