//go:build linux && cgo

package sqlutil

/*
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

static void myelin_trim(void) {
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}
*/
import "C"

// trimCHeap returns the C heap's free pages (those SQLite's page caches
// freed) to the OS; glibc's free keeps them otherwise.
func trimCHeap() { C.myelin_trim() }
