//go:build !linux || !cgo

package sqlutil

// trimCHeap does nothing where the C heap cannot be trimmed.
func trimCHeap() {}
