package storage

import (
	"context"
	"reflect"
	"testing"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/internal/sqlutil/sqltest"
)

func TestServerKeys(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s, err := New(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		get := func(server, id string) (ServerKey, bool) {
			t.Helper()
			ks, err := s.ServerKeys(ctx, []KeyRef{{server, id}})
			if err != nil {
				t.Fatal(err)
			}
			if len(ks) == 0 {
				return ServerKey{}, false
			}
			return ks[0], true
		}
		store := func(k ServerKey) {
			t.Helper()
			if err := s.StoreServerKeys(ctx, []ServerKey{k}, 1); err != nil {
				t.Fatal(err)
			}
		}
		a := ServerKey{ServerName: "a.test", KeyID: "ed25519:1", PublicKey: "AAAA", ValidUntilTS: 1000}
		b := ServerKey{ServerName: "b.test", KeyID: "ed25519:1", PublicKey: "BBBB", ValidUntilTS: 500}
		if err := s.StoreServerKeys(ctx, []ServerKey{a, b}, 1); err != nil {
			t.Fatal(err)
		}
		got, err := s.ServerKeys(ctx, []KeyRef{{"a.test", "ed25519:1"}, {"b.test", "ed25519:1"}, {"a.test", "ed25519:2"}, {"c.test", "ed25519:1"}})
		if err != nil || len(got) != 2 || !reflect.DeepEqual(got[0], a) || !reflect.DeepEqual(got[1], b) {
			t.Fatalf("keys = %+v, %v", got, err)
		}

		steps := []struct {
			name string
			next ServerKey
			want ServerKey
		}{
			{"a shorter validity is ignored",
				ServerKey{ServerName: "a.test", KeyID: "ed25519:1", PublicKey: "AAAA", ValidUntilTS: 900}, a},
			{"a longer validity replaces",
				ServerKey{ServerName: "a.test", KeyID: "ed25519:1", PublicKey: "AAAA", ValidUntilTS: 2000},
				ServerKey{ServerName: "a.test", KeyID: "ed25519:1", PublicKey: "AAAA", ValidUntilTS: 2000}},
			{"retiring the key replaces",
				ServerKey{ServerName: "a.test", KeyID: "ed25519:1", PublicKey: "AAAA", ExpiredTS: 1500},
				ServerKey{ServerName: "a.test", KeyID: "ed25519:1", PublicKey: "AAAA", ExpiredTS: 1500}},
			{"an old key stays old",
				ServerKey{ServerName: "a.test", KeyID: "ed25519:1", PublicKey: "AAAA", ValidUntilTS: 9000},
				ServerKey{ServerName: "a.test", KeyID: "ed25519:1", PublicKey: "AAAA", ExpiredTS: 1500}},
			{"an old key takes a new expiry",
				ServerKey{ServerName: "a.test", KeyID: "ed25519:1", PublicKey: "AAAA", ExpiredTS: 1400},
				ServerKey{ServerName: "a.test", KeyID: "ed25519:1", PublicKey: "AAAA", ExpiredTS: 1400}},
		}
		for _, st := range steps {
			before, _ := get(st.next.ServerName, st.next.KeyID)
			store(st.next)
			after, _ := get(st.next.ServerName, st.next.KeyID)
			if after != st.want {
				t.Errorf("%s: stored %+v, want %+v", st.name, after, st.want)
			}
			if m := MergeServerKey(before, st.next); m != st.want {
				t.Errorf("%s: MergeServerKey = %+v, want %+v", st.name, m, st.want)
			}
		}
		if _, ok := get("b.test", "ed25519:1"); !ok {
			t.Error("b.test key lost")
		}
	})
}

func TestKeyResponses(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		s, err := New(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if rs, err := s.KeyResponses(ctx, "a.test", nil); err != nil || len(rs) != 0 {
			t.Fatalf("empty = %v, %v", rs, err)
		}
		first := []byte(`{"server_name":"a.test","valid_until_ts":100}`)
		if err := s.StoreKeyResponse(ctx, "a.test", []string{"ed25519:1", "ed25519:old"}, 100, 10, first); err != nil {
			t.Fatal(err)
		}
		second := []byte(`{"server_name":"a.test","valid_until_ts":200}`)
		if err := s.StoreKeyResponse(ctx, "a.test", []string{"ed25519:2", "ed25519:old"}, 200, 20, second); err != nil {
			t.Fatal(err)
		}
		if err := s.StoreKeyResponse(ctx, "b.test", []string{"ed25519:1"}, 300, 30, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		all, err := s.KeyResponses(ctx, "a.test", nil)
		if err != nil {
			t.Fatal(err)
		}
		want := []KeyResponse{
			{KeyID: "ed25519:1", ValidUntilTS: 100, FetchedTS: 10, JSON: first},
			{KeyID: "ed25519:2", ValidUntilTS: 200, FetchedTS: 20, JSON: second},
			{KeyID: "ed25519:old", ValidUntilTS: 200, FetchedTS: 20, JSON: second},
		}
		if !reflect.DeepEqual(all, want) {
			t.Fatalf("all = %+v\nwant %+v", all, want)
		}
		some, err := s.KeyResponses(ctx, "a.test", []string{"ed25519:old", "ed25519:1", "ed25519:nope"})
		if err != nil || !reflect.DeepEqual(some, []KeyResponse{want[0], want[2]}) {
			t.Fatalf("some = %+v, %v", some, err)
		}
	})
}
