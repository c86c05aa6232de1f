package plugins

import (
	"encoding/binary"
	"time"
)

// Generators of the hostile modules of issue 10's table, each a few lines of
// Go (nothing large is committed).

// slowCompileModule stays within every structural limit but keeps the
// compiler busy for seconds: functions with 50,000 locals whose loop holds
// many if/else blocks reading and writing them (the compiler's work grows
// with locals times blocks; 3 x 50,000 x 601 is under the product limit).
func slowCompileModule(functions, variant int) []byte {
	m := abiModule(i64Const(allowResult))
	for i := 0; i < variant; i++ { // distinct bytes, so no compilation cache hit
		m.function(nil, nil, nil, nil)
	}
	code := []byte{0x03, 0x40} // loop
	for i := 0; i < 600; i++ {
		code = append(code, localGet(uint32(i*97%50_000))...)
		code = append(code, 0x04, i32) // if (result i32)
		code = append(code, localGet(uint32(i*31%50_000))...)
		code = append(code, 0x05) // else
		code = append(code, localGet(uint32(i*17%50_000))...)
		code = append(code, 0x0b, 0x21) // end, local.set
		code = append(code, leb(uint64(i*13%50_000))...)
	}
	code = append(code, localGet(0)...)
	code = append(code, 0x0d, 0x00, 0x0b) // br_if 0, end
	for i := 0; i < functions; i++ {
		m.function(nil, nil, [][2]uint64{{50_000, i32}}, code)
	}
	return m.bytes()
}

// tableModule has a funcref table declared without a maximum (the host
// gives it one) and a pm_handle running code (which leaves an i64).
func tableModule(code []byte) []byte {
	m := &wasmModule{memory: []byte{0x01, 0x01, 0x02}}
	m.tables = append(m.tables, []byte{0x70, 0x00, 0x01}) // funcref, min 1, no maximum
	return m.withABI(code).bytes()
}

// ifElse is `if (result i64) then else end` on the i32 on the stack.
func ifElse(then, els []byte) []byte {
	return cat([]byte{0x04, i64}, then, []byte{0x05}, els, opEnd)
}

// tableGrowModule: table.grow by n; allows if the grow was refused (-1),
// traps if it succeeded.
func tableGrowModule(n uint32) []byte {
	return tableModule(cat([]byte{0xd0, 0x70}, i32Const(int32(n)), []byte{0xfc, 0x0f, 0x00}, i32Const(-1), []byte{0x46},
		ifElse(i64Const(allowResult), opUnreachable)))
}

// tableFillModule: table.fill of n entries from 0 (traps when n is past the
// table's size).
func tableFillModule(n uint32) []byte {
	return tableModule(cat(i32Const(0), []byte{0xd0, 0x70}, i32Const(int32(n)), []byte{0xfc, 0x11, 0x00}, i64Const(allowResult)))
}

// fdWriteModule calls fd_write(1, iovecs at 65536, count) where every iovec
// covers the whole 16 MiB memory, once or (loop) until stopped, then allows.
func fdWriteModule(count int, loop bool) []byte {
	m := &wasmModule{memory: []byte{0x00, 0x80, 0x02}} // min 256 pages (16 MiB)
	write := m.importFunc("wasi_snapshot_preview1", "fd_write", []byte{i32, i32, i32, i32}, []byte{i32})
	iov := make([]byte, 0, 8*count)
	for i := 0; i < count; i++ {
		iov = append(iov, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x01) // ptr 0, len 16 MiB
	}
	m.datas = append(m.datas, cat([]byte{0x00}, i32Const(65536), opEnd, leb(uint64(len(iov))), iov))
	call := cat(i32Const(1), i32Const(65536), i32Const(int32(count)), i32Const(64), []byte{0x10}, leb(uint64(write)), opDrop)
	if loop {
		call = cat([]byte{0x03, 0x40}, call, []byte{0x0c, 0x00, 0x0b}) // loop ... br 0 end
	}
	m.withABI(cat(call, i64Const(allowResult)))
	return m.bytes()
}

// logFloodModule calls promanage.log with 16 MiB of memory in a loop.
func logFloodModule() []byte {
	m := &wasmModule{memory: []byte{0x00, 0x80, 0x02}}
	log := m.importFunc("promanage", "log", []byte{i32, i32, i32}, nil)
	m.withABI(cat([]byte{0x03, 0x40}, i32Const(1), i32Const(0), i32Const(16<<20), []byte{0x10}, leb(uint64(log)),
		[]byte{0x0c, 0x00, 0x0b}, i64Const(allowResult)))
	return m.bytes()
}

// sleepModule sleeps with poll_oneoff on a relative clock for an hour, over
// and over (each sleep is served in slices of at most maxGuestSleep).
func sleepModule() []byte {
	m := &wasmModule{memory: []byte{0x01, 0x01, 0x02}}
	poll := m.importFunc("wasi_snapshot_preview1", "poll_oneoff", []byte{i32, i32, i32, i32}, []byte{i32})
	sub := make([]byte, 48)
	sub[8] = 0  // clock
	sub[16] = 1 // monotonic
	binary.LittleEndian.PutUint64(sub[24:], uint64(time.Hour))
	m.datas = append(m.datas, cat([]byte{0x00}, i32Const(2048), opEnd, leb(48), sub))
	m.withABI(cat([]byte{0x03, 0x40}, i32Const(2048), i32Const(4096), i32Const(1), i32Const(64), []byte{0x10}, leb(uint64(poll)), opDrop,
		[]byte{0x0c, 0x00, 0x0b}, i64Const(allowResult)))
	return m.bytes()
}

// randomModule asks random_get for the whole 16 MiB memory in a loop.
func randomModule() []byte {
	m := &wasmModule{memory: []byte{0x00, 0x80, 0x02}}
	rnd := m.importFunc("wasi_snapshot_preview1", "random_get", []byte{i32, i32}, []byte{i32})
	m.withABI(cat([]byte{0x03, 0x40}, i32Const(0), i32Const(16<<20), []byte{0x10}, leb(uint64(rnd)), opDrop,
		[]byte{0x0c, 0x00, 0x0b}, i64Const(allowResult)))
	return m.bytes()
}

// slowInitTrapModule: _initialize spins for about iterations loop turns,
// and pm_handle traps on every call.
func slowInitTrapModule(iterations int32) []byte {
	m := &wasmModule{memory: []byte{0x01, 0x01, 0x02}}
	init := m.function(nil, nil, [][2]uint64{{1, i32}}, cat(
		i32Const(iterations), []byte{0x21, 0x00}, // local.set 0
		[]byte{0x03, 0x40}, localGet(0), i32Const(1), []byte{0x6b, 0x22, 0x00}, // loop: local.tee (n-1)
		[]byte{0x0d, 0x00, 0x0b}, // br_if 0, end
	))
	m.export("_initialize", kindFunc, init)
	m.withABI(opUnreachable)
	return m.bytes()
}

// nulLogModule logs a line with a NUL byte and invalid UTF-8, and rejects
// with the same text as its message.
func nulLogModule() []byte {
	m := &wasmModule{memory: []byte{0x01, 0x01, 0x02}}
	log := m.importFunc("promanage", "log", []byte{i32, i32, i32}, nil)
	msg := "bad\x00byte \xff"
	out := `{"allow":false,"message":"bad\u0000byte"}`
	m.datas = append(m.datas, cat([]byte{0x00}, i32Const(512), opEnd, wasmName(msg)), cat([]byte{0x00}, i32Const(600), opEnd, wasmName(out)))
	m.withABI(cat(i32Const(1), i32Const(512), i32Const(int32(len(msg))), []byte{0x10}, leb(uint64(log)),
		i64Const(600<<32|int64(len(out)))))
	return m.bytes()
}
