package filter

import (
	"encoding/json"
	"fmt"
)

// shape describes the keys of a filter object whose values may not be null:
// a nested object has its own shape, a list must hold no null items.
type shape map[string]*shape

var (
	eventFilterShape = shape{"limit": nil, "not_senders": nil, "not_types": nil, "senders": nil, "types": nil}
	roomEventShape   = func() shape {
		s := shape{"unread_thread_notifications": nil, "lazy_load_members": nil, "include_redundant_members": nil,
			"not_rooms": nil, "rooms": nil, "contains_url": nil}
		for k := range eventFilterShape {
			s[k] = nil
		}
		return s
	}()
	roomShape = shape{"not_rooms": nil, "rooms": nil, "ephemeral": &roomEventShape, "include_leave": nil,
		"state": &roomEventShape, "timeline": &roomEventShape, "account_data": &roomEventShape}
	filterShape = shape{"event_fields": nil, "event_format": nil, "presence": &eventFilterShape,
		"account_data": &eventFilterShape, "room": &roomShape}
)

// checkNulls rejects null where the schema wants a value: Go would decode
// it silently as "absent".
func checkNulls(data []byte) error {
	var obj map[string]any
	if err := json.Unmarshal(data, &obj); err != nil {
		return fmt.Errorf("filter must be a JSON object")
	}
	return filterShape.check(obj, "")
}

func (s shape) check(obj map[string]any, path string) error {
	for key, sub := range s {
		v, ok := obj[key]
		if !ok {
			continue
		}
		name := path + key
		switch v := v.(type) {
		case nil:
			return fmt.Errorf("%s: must not be null", name)
		case []any:
			for _, item := range v {
				if item == nil {
					return fmt.Errorf("%s: items must not be null", name)
				}
			}
		case map[string]any:
			if sub != nil {
				if err := sub.check(v, name+"."); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
