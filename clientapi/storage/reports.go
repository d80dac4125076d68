package storage

import (
	"context"
	"database/sql"
	"strings"

	"github.com/myelin-chat/myelin/internal/sqlutil"
)

// Kinds of report.
const (
	ReportEvent = "event"
	ReportRoom  = "room"
	ReportUser  = "user"
)

// Report is a user's report of an event, a room or a user.
type Report struct {
	ID         int64
	Kind       string
	ReceivedTS int64
	UserID     string // who reported
	RoomID     string // event and room reports
	EventID    string // event reports
	// EventSender is the sender of the reported event.
	EventSender  string
	TargetUserID string // user reports
	Reason       *string
	Score        *int64
}

const reportColumns = `id, kind, received_ts, user_id, room_id, event_id, event_sender, target_user_id, reason, score`

func scanReport(row interface{ Scan(...any) error }) (Report, error) {
	var r Report
	var reason sql.NullString
	var score sql.NullInt64
	err := row.Scan(&r.ID, &r.Kind, &r.ReceivedTS, &r.UserID, &r.RoomID, &r.EventID, &r.EventSender, &r.TargetUserID, &reason, &score)
	if reason.Valid {
		r.Reason = &reason.String
	}
	if score.Valid {
		r.Score = &score.Int64
	}
	return r, err
}

// InsertReport stores a report and returns its ID.
func (s *Storage) InsertReport(ctx context.Context, r *Report) (int64, error) {
	var id int64
	err := s.db.WithTx(ctx, func(tx *sqlutil.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO cs_reports (kind, received_ts, user_id, room_id, event_id, event_sender, target_user_id, reason, score)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			r.Kind, r.ReceivedTS, r.UserID, r.RoomID, r.EventID, r.EventSender, r.TargetUserID, r.Reason, r.Score).Scan(&id)
	})
	return id, err
}

// ReportFilter selects reports of one kind; empty fields match any.
type ReportFilter struct {
	Kind        string
	UserID      string
	RoomID      string
	EventSender string
}

func (f ReportFilter) where() (string, []any) {
	conds, args := []string{"kind = ?"}, []any{f.Kind}
	for _, c := range []struct{ col, v string }{{"user_id", f.UserID}, {"room_id", f.RoomID}, {"event_sender", f.EventSender}} {
		if c.v != "" {
			conds = append(conds, c.col+" = ?")
			args = append(args, c.v)
		}
	}
	return strings.Join(conds, " AND "), args
}

// ListReports returns up to limit reports matching f after skipping
// offset, newest first unless forward, and how many match in all.
func (s *Storage) ListReports(ctx context.Context, f ReportFilter, offset, limit int, forward bool) ([]Report, int64, error) {
	where, args := f.where()
	var total int64
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM cs_reports WHERE `+where, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	order := "DESC"
	if forward {
		order = "ASC"
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+reportColumns+` FROM cs_reports WHERE `+where+
		` ORDER BY received_ts `+order+`, id `+order+` LIMIT ? OFFSET ?`, append(args, limit, offset)...)
	list, err := sqlutil.Collect(rows, err, func(rows *sql.Rows) (Report, error) { return scanReport(rows) })
	return list, total, err
}

// SelectReport returns one report of the kind, or ErrNotFound.
func (s *Storage) SelectReport(ctx context.Context, kind string, id int64) (Report, error) {
	r, err := scanReport(s.db.QueryRowContext(ctx, `SELECT `+reportColumns+` FROM cs_reports WHERE id = ? AND kind = ?`, id, kind))
	return r, sqlutil.NotFound(err)
}

// DeleteReport deletes one report of the kind; ErrNotFound if absent.
func (s *Storage) DeleteReport(ctx context.Context, kind string, id int64) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM cs_reports WHERE id = ? AND kind = ?`, id, kind)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}
