package storage

import (
	"context"
	"errors"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

func TestFilters(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s, err := New(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		a, err := s.PutFilter(ctx, "@a:x", []byte(`{"room":{}}`))
		if err != nil || a != "0" {
			t.Fatalf("first filter id = %q, %v", a, err)
		}
		b, _ := s.PutFilter(ctx, "@a:x", []byte(`{"presence":{}}`))
		again, _ := s.PutFilter(ctx, "@a:x", []byte(`{"room":{}}`))
		other, _ := s.PutFilter(ctx, "@b:x", []byte(`{"room":{}}`))
		if b != "1" || again != "0" || other != "0" {
			t.Fatalf("ids b=%s again=%s other=%s", b, again, other)
		}
		got, err := s.GetFilter(ctx, "@a:x", "1")
		if err != nil || string(got) != `{"presence":{}}` {
			t.Fatalf("get = %s, %v", got, err)
		}
		for _, id := range []string{"7", "x", "-1"} {
			if _, err := s.GetFilter(ctx, "@a:x", id); !errors.Is(err, ErrNotFound) {
				t.Errorf("filter %s: err = %v, want not found", id, err)
			}
		}
		if _, err := s.GetFilter(ctx, "@b:x", "1"); !errors.Is(err, ErrNotFound) {
			t.Error("filters leak between users")
		}
	})
}
