package federationapi

import "testing"

// A destination's class follows its failures in a row: ok without any,
// backoff while the wait still grows, down once it is at maxBackoff.
func TestDestClass(t *testing.T) {
	for _, tc := range []struct {
		failures int
		want     string
	}{{0, classOK}, {1, classBackoff}, {11, classBackoff}, {12, classDown}, {1000, classDown}} {
		if got := destClass(tc.failures); got != tc.want {
			t.Errorf("destClass(%d) = %s, want %s", tc.failures, got, tc.want)
		}
	}
	// down is where backoff stops growing.
	if minBackoff<<10 >= maxBackoff || minBackoff<<11 < maxBackoff {
		t.Fatalf("the backoff bounds changed: revisit the table above")
	}
}
