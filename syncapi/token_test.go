package syncapi

import "testing"

func TestStreamPosRoundTrip(t *testing.T) {
	p := StreamPos{PDU: 12, Typing: 1700000000000, Receipt: 3, AccountData: 4, Presence: 5, ToDevice: 6, DeviceList: 7}
	got, err := ParseStreamPos(p.String())
	if err != nil || got != p {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	old, err := ParseStreamPos("s5_6")
	if err != nil || old.PDU != 5 || old.Typing != 6 || old.Receipt != 0 {
		t.Fatalf("short token: %+v %v", old, err)
	}
	for _, bad := range []string{"", "s", "x1_2", "s1_-2", "s1__2", "s1_2_3_4_5_6_7_8", "sabc", "t5"} {
		if _, err := ParseStreamPos(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestBoundary(t *testing.T) {
	if b, err := parseBoundary("t42"); err != nil || b != 42 {
		t.Fatalf("t42: %d %v", b, err)
	}
	if b, err := parseBoundary(StreamPos{PDU: 9}.String()); err != nil || b != 10 {
		t.Fatalf("sync token: %d %v", b, err)
	}
	if b, err := parseBoundary("t-5"); err != nil || b != -5 {
		t.Fatalf("negative boundary (backfill): %d %v", b, err)
	}
	for _, bad := range []string{"", "t", "tx", "q1"} {
		if _, err := parseBoundary(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func FuzzParseStreamPos(f *testing.F) {
	f.Add("s1_2_3_4_5_6_7")
	f.Add("s0")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseStreamPos(s)
		if err != nil {
			return
		}
		q, err := ParseStreamPos(p.String())
		if err != nil || q != p {
			t.Fatalf("%q -> %+v does not round trip", s, p)
		}
	})
}

func FuzzParseBoundary(f *testing.F) {
	f.Add("t12")
	f.Add("s1_2")
	f.Fuzz(func(t *testing.T, s string) { _, _ = parseBoundary(s) })
}
