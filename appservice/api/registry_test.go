package api

import "testing"

func mustNS(t *testing.T, re string, excl bool) Namespace {
	t.Helper()
	n, err := NewNamespace(re, excl)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRegistryNamespaces(t *testing.T) {
	irc := &Service{ID: "irc", ASToken: "as1", HSToken: "hs1", SenderID: "@ircbot:example.org",
		Users:   []Namespace{mustNS(t, `@irc_.*:example\.org`, true), mustNS(t, `@shared_.*`, false)},
		Aliases: []Namespace{mustNS(t, `#irc_`, true)},
		Rooms:   []Namespace{mustNS(t, `!bridged.*`, false)}}
	other := &Service{ID: "other", ASToken: "as2", HSToken: "hs2", SenderID: "@otherbot:example.org",
		Users: []Namespace{mustNS(t, `@shared_.*`, false)}}
	r, err := NewRegistry([]*Service{irc, other})
	if err != nil {
		t.Fatal(err)
	}
	if r.ByASToken("as1") != irc || r.ByASToken("as2") != other || r.ByASToken("hs1") != nil || r.ByASToken("") != nil {
		t.Fatal("ByASToken")
	}
	if r.ExclusiveUserOwner("@irc_alice:example.org") != irc || r.ExclusiveUserOwner("@ircbot:example.org") != irc {
		t.Fatal("exclusive user owner")
	}
	// Matching is anchored at the start only, as Synapse's re.match.
	if r.ExclusiveUserOwner("@xirc_alice:example.org") != nil || r.ExclusiveUserOwner("@shared_bob:example.org") != nil {
		t.Fatal("non-exclusive or unanchored user treated as exclusive")
	}
	if got := r.UserOwners("@shared_bob:example.org"); len(got) != 2 {
		t.Fatalf("shared namespace owners: %d", len(got))
	}
	if r.ExclusiveAliasOwner("#irc_chan:example.org") != irc || r.ExclusiveAliasOwner("#chan:example.org") != nil {
		t.Fatal("alias owner")
	}
	if !irc.RoomInNamespace("!bridged123:example.org") || irc.RoomInNamespace("!other:example.org") {
		t.Fatal("room namespace")
	}
	if !irc.IsInterestedInUser("@ircbot:example.org") || irc.IsInterestedInUser("@alice:example.org") {
		t.Fatal("interest in users")
	}
}

func TestRegistryRefusesSharedTokensAndSenders(t *testing.T) {
	a := &Service{ID: "a", ASToken: "t1", HSToken: "t2", SenderID: "@a:x"}
	for _, b := range []*Service{
		{ID: "a", ASToken: "t3", HSToken: "t4", SenderID: "@b:x"},
		{ID: "b", ASToken: "t2", HSToken: "t4", SenderID: "@b:x"},
		{ID: "b", ASToken: "t3", HSToken: "t4", SenderID: "@a:x"},
		{ID: "b", ASToken: "", HSToken: "t4", SenderID: "@b:x"},
	} {
		if _, err := NewRegistry([]*Service{a, b}); err == nil {
			t.Errorf("registry accepted %+v next to %+v", b, a)
		}
	}
}
