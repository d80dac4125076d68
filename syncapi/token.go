package syncapi

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// StreamPos is a point in every stream a sync follows. Its text form, the
// since/next_batch token, is "s" and the positions joined by "_"; fields
// added later may be missing from older tokens and read as 0.
type StreamPos struct {
	PDU         int64
	Typing      int64
	Receipt     int64
	AccountData int64
	Presence    int64
	ToDevice    int64
	DeviceList  int64
}

func (p StreamPos) fields() []*int64 {
	return []*int64{&p.PDU, &p.Typing, &p.Receipt, &p.AccountData, &p.Presence, &p.ToDevice, &p.DeviceList}
}

// String is the token form.
func (p StreamPos) String() string {
	return fmt.Sprintf("s%d_%d_%d_%d_%d_%d_%d", p.PDU, p.Typing, p.Receipt, p.AccountData, p.Presence, p.ToDevice, p.DeviceList)
}

var errBadToken = errors.New("malformed token")

// ParseStreamPos reads a since token.
func ParseStreamPos(s string) (StreamPos, error) {
	var p StreamPos
	rest, ok := strings.CutPrefix(s, "s")
	if !ok || rest == "" {
		return p, errBadToken
	}
	parts := strings.Split(rest, "_")
	fields := []*int64{&p.PDU, &p.Typing, &p.Receipt, &p.AccountData, &p.Presence, &p.ToDevice, &p.DeviceList}
	if len(parts) > len(fields) {
		return p, errBadToken
	}
	for i, part := range parts {
		n, err := strconv.ParseInt(part, 10, 64)
		if err != nil || n < 0 {
			return p, errBadToken
		}
		*fields[i] = n
	}
	return p, nil
}

// After reports whether p is ahead of q in any stream.
func (p StreamPos) After(q StreamPos) bool {
	pf, qf := p.fields(), q.fields()
	for i := range pf {
		if *pf[i] > *qf[i] {
			return true
		}
	}
	return false
}

// A pagination token ("t<n>") is a boundary between timeline positions: the
// events before it have positions below n. Sync tokens are accepted too:
// their boundary follows their timeline position.
func formatBoundary(b int64) string { return "t" + strconv.FormatInt(b, 10) }

func parseBoundary(s string) (int64, error) {
	if rest, ok := strings.CutPrefix(s, "t"); ok {
		n, err := strconv.ParseInt(rest, 10, 64)
		if err != nil {
			return 0, errBadToken
		}
		return n, nil
	}
	p, err := ParseStreamPos(s)
	if err != nil {
		return 0, err
	}
	return p.PDU + 1, nil
}
