package sqlutil

import "database/sql"

// Collect scans every row of a query into a slice. It takes the results of
// QueryContext as they are, so that
//
//	rows, err := q.QueryContext(ctx, query, args...)
//	return sqlutil.Collect(rows, err, scanThing)
//
// replaces the usual loop. It closes rows and returns the first error of the
// query, of scan or of the iteration (rows.Err), with a nil slice. Without
// rows the slice is nil too.
func Collect[T any](rows *sql.Rows, err error, scan func(*sql.Rows) (T, error)) ([]T, error) {
	var out []T
	err = Each(rows, err, func(rows *sql.Rows) error {
		v, err := scan(rows)
		if err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ScanValue scans a row of one column into a T; pass it to Collect for a
// query that selects a single column:
//
//	ids, err := sqlutil.Collect(rows, err, sqlutil.ScanValue[string])
func ScanValue[T any](rows *sql.Rows) (T, error) {
	var v T
	err := rows.Scan(&v)
	return v, err
}

// Each calls fn for every row of a query, for loops that fill a map or do
// anything other than append to a slice. Like Collect it takes the results
// of QueryContext as they are, closes rows, and returns the first error of
// the query, of fn or of the iteration (rows.Err).
func Each(rows *sql.Rows, err error, fn func(*sql.Rows) error) error {
	if err != nil {
		if rows != nil {
			rows.Close()
		}
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// InBatches calls fn on consecutive slices of list of at most size elements,
// in order, and stops at the first error. It does not call fn for an empty
// list. Use it to keep IN (...) lists and VALUES lists under the engines'
// parameter limits.
func InBatches[T any](list []T, size int, fn func(batch []T) error) error {
	if size <= 0 {
		panic("sqlutil: InBatches size must be positive")
	}
	for len(list) > 0 {
		n := min(len(list), size)
		batch := list[:n:n]
		list = list[n:]
		if err := fn(batch); err != nil {
			return err
		}
	}
	return nil
}
