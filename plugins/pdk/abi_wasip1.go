//go:build wasip1

package pdk

import "unsafe"

// pinned keeps every buffer the host may still read or write reachable, so
// the garbage collector neither frees nor reuses it: the buffers pm_alloc
// handed out for the current call, then the output of the last call (the
// host copies it after pm_handle returns, before it calls anything else).
var pinned [][]byte

//go:wasmexport pm_alloc
func pmAlloc(size int32) int32 {
	if size <= 0 {
		return 0
	}
	b := make([]byte, size)
	pinned = append(pinned, b)
	return int32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}

//go:wasmexport pm_handle
func pmHandle(hookPtr, hookLen, inPtr, inLen int32) int64 {
	hook := pinnedBytes(hookPtr, hookLen)
	input := pinnedBytes(inPtr, inLen)
	out := Handle(string(hook), input)
	pinned = [][]byte{out} // inputs were copied by decoding; only the output must survive
	if len(out) == 0 {
		return 0
	}
	return int64(uintptr(unsafe.Pointer(unsafe.SliceData(out))))<<32 | int64(len(out))
}

// pinnedBytes finds the pm_alloc buffer at ptr; the host only passes those.
func pinnedBytes(ptr, n int32) []byte {
	for _, b := range pinned {
		if len(b) > 0 && int32(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) == ptr && int(n) <= len(b) {
			return b[:n]
		}
	}
	return nil
}

//go:wasmimport promanage log
func promanageLog(level int32, ptr unsafe.Pointer, n int32)

func hostLog(level int32, msg string) {
	if msg == "" {
		return
	}
	promanageLog(level, unsafe.Pointer(unsafe.StringData(msg)), int32(len(msg)))
}
