package httputil_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/internal/httputil"
	"github.com/myelin-chat/myelin/internal/mxerr"
)

// UnmarshalObject refuses what encoding/json would silently change: lone
// surrogates (decoded as U+FFFD), duplicate keys (the last wins) and NUL.
func TestUnmarshalObjectStrict(t *testing.T) {
	many := func(dup bool) string {
		var b strings.Builder
		b.WriteString("{")
		for i := 0; i < 40; i++ {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(`"k` + strings.Repeat("x", i) + `":1`)
		}
		if dup {
			b.WriteString(`,"kxxxxx":2`)
		}
		b.WriteString("}")
		return b.String()
	}
	for _, tc := range []struct {
		body     string
		remote   bool
		wantCode string // "" = accepted
	}{
		{`{"a":"b","c":{"a":1},"d":[{"a":1},{"a":2}]}`, false, ""},
		{`{"body":"\ud83d\ude00 \u00e9 \\u0000"}`, false, ""},
		{`{"\"":1,"\\":2,"x":"\"\\"}`, false, ""},
		{many(false), false, ""},
		{`{"a":1,"a":2}`, false, mxerr.CodeBadJSON},
		{`{"a":1,"\u0061":2}`, false, mxerr.CodeBadJSON},
		{`{"c":{"x":[1,{"y":1,"y":1}]}}`, false, mxerr.CodeBadJSON},
		{many(true), false, mxerr.CodeBadJSON},
		{`{"a":"\ud800"}`, false, mxerr.CodeNotJSON},
		{`{"a":"\ud800x"}`, false, mxerr.CodeNotJSON},
		{`{"a":"\ud800\u0041"}`, false, mxerr.CodeNotJSON},
		{`{"a":"\udc00\ud800"}`, false, mxerr.CodeNotJSON},
		{`{"\udfff":1}`, false, mxerr.CodeNotJSON},
		{`{"a":"x\u0000y"}`, false, mxerr.CodeBadJSON},
		{`{"a":"x\u0000y"}`, true, ""},
		{`{"a":1,"a":2}`, true, mxerr.CodeBadJSON},
	} {
		var v map[string]any
		f := httputil.UnmarshalObject
		if tc.remote {
			f = httputil.UnmarshalRemoteObject
		}
		err := f([]byte(tc.body), &v)
		switch {
		case tc.wantCode == "" && err != nil:
			t.Errorf("%.80s (remote %v): %v, want accepted", tc.body, tc.remote, err)
		case tc.wantCode != "" && !mxerr.Is(err, tc.wantCode):
			t.Errorf("%.80s (remote %v): %v, want %s", tc.body, tc.remote, err, tc.wantCode)
		}
	}
}

// BenchmarkUnmarshalObject decodes a typical message body; compare with
// BenchmarkJSONUnmarshal (encoding/json alone) for the cost of the checks.
func BenchmarkUnmarshalObject(b *testing.B) {
	body := []byte(`{"msgtype":"m.text","body":"` + strings.Repeat("hello world ", 40) + `","format":"org.matrix.custom.html","formatted_body":"<b>hi</b> \u00e9","m.relates_to":{"rel_type":"m.thread","event_id":"$abc"}}`)
	for range b.N {
		var v map[string]any
		if err := httputil.UnmarshalObject(body, &v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJSONUnmarshal(b *testing.B) {
	body := []byte(`{"msgtype":"m.text","body":"` + strings.Repeat("hello world ", 40) + `","format":"org.matrix.custom.html","formatted_body":"<b>hi</b> \u00e9","m.relates_to":{"rel_type":"m.thread","event_id":"$abc"}}`)
	for range b.N {
		var v map[string]any
		if err := json.Unmarshal(body, &v); err != nil {
			b.Fatal(err)
		}
	}
}
