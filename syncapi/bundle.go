package syncapi

import (
	"context"
	"encoding/json"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/myelin-chat/myelin/internal/sqlutil"
	"github.com/myelin-chat/myelin/syncapi/storage"
)

// Bundled aggregations (client-server API "Aggregations of child events"):
// wherever events are served, each carries in unsigned."m.relations" what
// its children add up to: m.thread (the latest reply, the count, whether
// the user took part), m.reference (the referencing events' IDs) and
// m.replace (the most recent valid edit; the content itself stays). As in
// Synapse, state events and events that are themselves edits or
// annotations get none, only events with no relation of their own can be
// thread roots, redacted events get no edit, and a thread's latest reply
// comes with its own aggregations.
//
// One batch of events costs one query to learn which kinds of children
// they have, then one query per kind present (and one to read the latest
// replies of threads), whatever the number of events.

// relationOf reads an event's own relation: content."m.relates_to" with a
// string rel_type and event_id (annotations add a key). nil for none.
func relationOf(e *storage.Event) *storage.Relation {
	if e.Redacted {
		return nil
	}
	rel := gjson.GetBytes(e.JSON, `content.m\.relates_to`)
	relType, parent := rel.Get("rel_type"), rel.Get("event_id")
	if !rel.IsObject() || relType.Type != gjson.String || parent.Type != gjson.String || relType.Str == "" || parent.Str == "" {
		return nil
	}
	r := &storage.Relation{EventID: e.EventID, RoomID: e.RoomID, RelatesTo: parent.Str, RelType: relType.Str,
		Sender: e.Sender, Type: e.Type, Pos: e.Pos}
	if k := rel.Get("key"); k.Type == gjson.String {
		r.Key = k.Str
	}
	r.EditOK = r.RelType == storage.RelReplace && e.StateKey == nil && gjson.GetBytes(e.JSON, `content.m\.new_content`).IsObject()
	return r
}

// indexRelation records a timeline event's relation, if it has one.
func indexRelation(ctx context.Context, tx *sqlutil.Tx, e *storage.Event) error {
	if r := relationOf(e); r != nil {
		return storage.InsertRelation(ctx, tx, r)
	}
	return nil
}

// bundleRelations computes the aggregations of a batch of events about to
// be served to fm's user and hands them to fm, which adds them as it
// formats each event. Call it once per response with every event of it.
func (s *SyncAPI) bundleRelations(ctx context.Context, fm *formatter, batches ...[]storage.Event) error {
	q := s.store.DB()
	var parents []storage.Parent
	events := map[string]*storage.Event{}
	for _, b := range batches {
		for i := range b {
			e := &b[i]
			if e.StateKey != nil || events[e.EventID] != nil {
				continue
			}
			if r := relationOf(e); r != nil && (r.RelType == storage.RelReplace || r.RelType == storage.RelAnnotation) {
				continue
			}
			events[e.EventID] = e
			parents = append(parents, storage.Parent{RoomID: e.RoomID, EventID: e.EventID})
		}
	}
	if len(parents) == 0 {
		return nil
	}
	kinds, err := storage.ChildKinds(ctx, q, parents)
	if err != nil || len(kinds) == 0 {
		return err
	}
	has := func(kind string) []storage.Parent {
		var out []storage.Parent
		for _, p := range parents {
			if kinds[p.EventID][kind] {
				out = append(out, p)
			}
		}
		return out
	}

	// Threads first: their latest replies join the events aggregated.
	var roots []storage.Parent
	for _, p := range has(storage.RelThread) {
		if relationOf(events[p.EventID]) == nil {
			roots = append(roots, p)
		}
	}
	threads := map[string]storage.ThreadSummary{}
	latest := map[string]*storage.Event{}
	if len(roots) > 0 {
		if threads, err = storage.ThreadSummaries(ctx, q, roots, fm.userID); err != nil {
			return err
		}
		var ids []string
		for _, t := range threads {
			ids = append(ids, t.LatestEventID)
		}
		if latest, err = storage.EventsByID(ctx, q, ids); err != nil {
			return err
		}
		var more []storage.Parent
		for _, e := range latest {
			if events[e.EventID] == nil {
				events[e.EventID] = e
				more = append(more, storage.Parent{RoomID: e.RoomID, EventID: e.EventID})
			}
		}
		if len(more) > 0 {
			moreKinds, err := storage.ChildKinds(ctx, q, more)
			if err != nil {
				return err
			}
			for id, k := range moreKinds {
				kinds[id] = k
			}
			parents = append(parents, more...)
		}
	}

	refs := map[string][]string{}
	if ps := has(storage.RelReference); len(ps) > 0 {
		if refs, err = storage.References(ctx, q, ps); err != nil {
			return err
		}
	}
	edits := map[string]*storage.Event{}
	var editable []storage.Parent
	for _, p := range has(storage.RelReplace) {
		if !events[p.EventID].Redacted {
			editable = append(editable, p)
		}
	}
	if len(editable) > 0 {
		if edits, err = storage.LatestEdits(ctx, q, editable); err != nil {
			return err
		}
	}

	if fm.relations == nil {
		fm.relations = map[string]json.RawMessage{}
	}
	build := func(id string) json.RawMessage {
		out := []byte(`{}`)
		if ids := refs[id]; len(ids) > 0 {
			chunk := make([]map[string]string, len(ids))
			for i, r := range ids {
				chunk[i] = map[string]string{"event_id": r}
			}
			b, _ := json.Marshal(map[string]any{"chunk": chunk})
			out, _ = sjson.SetRawBytes(out, `m\.reference`, b)
		}
		if e := edits[id]; e != nil {
			out, _ = sjson.SetRawBytes(out, `m\.replace`, fm.event(e))
		}
		if len(out) == 2 {
			return nil
		}
		return out
	}
	// The latest replies' own aggregations, then everyone's.
	for _, e := range latest {
		if r := build(e.EventID); r != nil {
			fm.relations[e.EventID] = r
		}
	}
	for id := range events {
		if latest[id] != nil {
			continue
		}
		r := build(id)
		if t, ok := threads[id]; ok && latest[t.LatestEventID] != nil {
			if r == nil {
				r = []byte(`{}`)
			}
			b, _ := json.Marshal(map[string]any{
				"latest_event":              fm.event(latest[t.LatestEventID]),
				"count":                     t.Count,
				"current_user_participated": t.Participated || events[id].Sender == fm.userID,
			})
			r, _ = sjson.SetRawBytes(r, `m\.thread`, b)
		}
		if r != nil {
			fm.relations[id] = r
		}
	}
	return nil
}

// bundleTimelines computes the aggregations of every timeline of a sync
// response at once.
func (s *SyncAPI) bundleTimelines(ctx context.Context, fm *formatter, timelines map[string][]storage.Event) error {
	batches := make([][]storage.Event, 0, len(timelines))
	for _, evs := range timelines {
		batches = append(batches, evs)
	}
	return s.bundleRelations(ctx, fm, batches...)
}

// BundledAggregations implements api.RelationsAPI.
func (s *SyncAPI) BundledAggregations(ctx context.Context, userID string, eventIDs []string) (map[string]json.RawMessage, error) {
	if err := s.catchUp(ctx, userID); err != nil {
		return nil, err
	}
	held, err := storage.EventsByID(ctx, s.store.DB(), eventIDs)
	if err != nil {
		return nil, err
	}
	evs := make([]storage.Event, 0, len(held))
	for _, e := range held {
		evs = append(evs, *e)
	}
	fm := newFormatter(userID, "", nil, true)
	if err := s.bundleRelations(ctx, fm, evs); err != nil {
		return nil, err
	}
	out := map[string]json.RawMessage{}
	for _, id := range eventIDs {
		if r, ok := fm.relations[id]; ok {
			out[id] = r
		}
	}
	return out, nil
}
