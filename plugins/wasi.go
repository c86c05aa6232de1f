package plugins

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"math"
	"runtime"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// The WASI preview1 functions a plugin may import (ABI.md), implemented here
// rather than by wazero's package so that every one of them is bounded:
// each checks the call's deadline on entry (wazero checks it only while
// guest code runs, so a host function could otherwise outlive it), each
// touches at most a bounded amount of guest memory, and the environment
// behind them is empty: no arguments, no environment variables, no
// preopened directory, stdin at end of file, stdout and stderr into the
// call's bounded log.
const (
	// fdWriteMaxIovecs bounds the iovecs of one fd_write (Linux's IOV_MAX);
	// more is EINVAL.
	fdWriteMaxIovecs = 1024
	// fdWriteMaxBytes bounds what one fd_write copies into the log; the rest
	// is counted as written and dropped, and nothing is copied once the log
	// is full.
	fdWriteMaxBytes = 64 << 10
	// pollMaxSubscriptions bounds one poll_oneoff.
	pollMaxSubscriptions = 1024
	// randomChunk is how much random_get fills between deadline checks.
	randomChunk = 64 << 10
)

// WASI errno values.
const (
	errnoSuccess = 0
	errnoBadf    = 8
	errnoFault   = 21
	errnoInval   = 28
	errnoNosys   = 52
)

var wasiStart = time.Now()

// checkDeadline stops the guest if the call's context is done: it closes the
// module with wazero's exit code for the reason (classified as ErrTimeout or
// cancellation) and unwinds the guest.
func checkDeadline(ctx context.Context, mod api.Module) {
	err := ctx.Err()
	if err == nil {
		return
	}
	code := sys.ExitCodeDeadlineExceeded
	if err == context.Canceled {
		code = sys.ExitCodeContextCanceled
	}
	_ = mod.CloseWithExitCode(ctx, code)
	panic(sys.NewExitError(code))
}

type wasiFunc struct {
	name    string
	params  []api.ValueType
	results []api.ValueType
	fn      func(ctx context.Context, mod api.Module, stack []uint64) uint32
}

var (
	vI32 = api.ValueTypeI32
	vI64 = api.ValueTypeI64
)

func wasiFuncs() []wasiFunc {
	errno := []api.ValueType{vI32}
	return []wasiFunc{
		{"args_get", []api.ValueType{vI32, vI32}, errno, func(context.Context, api.Module, []uint64) uint32 { return errnoSuccess }},
		{"args_sizes_get", []api.ValueType{vI32, vI32}, errno, writeTwoZeros},
		{"environ_get", []api.ValueType{vI32, vI32}, errno, func(context.Context, api.Module, []uint64) uint32 { return errnoSuccess }},
		{"environ_sizes_get", []api.ValueType{vI32, vI32}, errno, writeTwoZeros},
		{"clock_res_get", []api.ValueType{vI32, vI32}, errno, wasiClockResGet},
		{"clock_time_get", []api.ValueType{vI32, vI64, vI32}, errno, wasiClockTimeGet},
		{"fd_close", []api.ValueType{vI32}, errno, func(_ context.Context, _ api.Module, s []uint64) uint32 {
			if fd := uint32(s[0]); fd <= 2 {
				return errnoSuccess
			}
			return errnoBadf
		}},
		{"fd_fdstat_get", []api.ValueType{vI32, vI32}, errno, wasiFdstatGet},
		{"fd_fdstat_set_flags", []api.ValueType{vI32, vI32}, errno, func(_ context.Context, _ api.Module, s []uint64) uint32 {
			if fd := uint32(s[0]); fd <= 2 {
				return errnoSuccess
			}
			return errnoBadf
		}},
		{"fd_prestat_get", []api.ValueType{vI32, vI32}, errno, func(context.Context, api.Module, []uint64) uint32 { return errnoBadf }},
		{"fd_prestat_dir_name", []api.ValueType{vI32, vI32, vI32}, errno, func(context.Context, api.Module, []uint64) uint32 { return errnoBadf }},
		{"fd_read", []api.ValueType{vI32, vI32, vI32, vI32}, errno, wasiFdRead},
		{"fd_write", []api.ValueType{vI32, vI32, vI32, vI32}, errno, wasiFdWrite},
		{"poll_oneoff", []api.ValueType{vI32, vI32, vI32, vI32}, errno, wasiPollOneoff},
		{"random_get", []api.ValueType{vI32, vI32}, errno, wasiRandomGet},
		{"sched_yield", nil, errno, func(context.Context, api.Module, []uint64) uint32 { runtime.Gosched(); return errnoSuccess }},
	}
}

// instantiateWASI registers the bounded WASI module in rt.
func instantiateWASI(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(wasiModule)
	for _, f := range wasiFuncs() {
		fn := f.fn
		b.NewFunctionBuilder().
			WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
				checkDeadline(ctx, mod)
				stack[0] = uint64(fn(ctx, mod, stack))
			}), f.params, f.results).
			Export(f.name)
	}
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(wasiProcExit), []api.ValueType{vI32}, nil).
		Export("proc_exit")
	_, err := b.Instantiate(ctx)
	return err
}

// wasiSignatures are the types of the allowed imports, for precheck's
// message (wazero would refuse a mismatch too, less clearly).
func wasiSignatures() map[string]funcType {
	conv := func(ts []api.ValueType) []byte {
		out := make([]byte, len(ts))
		for i, t := range ts {
			out[i] = byte(t)
		}
		return out
	}
	m := map[string]funcType{"proc_exit": {params: []byte{i32Type}}}
	for _, f := range wasiFuncs() {
		m[f.name] = funcType{params: conv(f.params), results: conv(f.results)}
	}
	return m
}

const (
	i32Type = 0x7f
	i64Type = 0x7e
)

func wasiProcExit(ctx context.Context, mod api.Module, stack []uint64) {
	code := uint32(stack[0])
	_ = mod.CloseWithExitCode(ctx, code)
	panic(sys.NewExitError(code))
}

func writeTwoZeros(_ context.Context, mod api.Module, s []uint64) uint32 {
	mem := mod.Memory()
	if !mem.WriteUint32Le(uint32(s[0]), 0) || !mem.WriteUint32Le(uint32(s[1]), 0) {
		return errnoFault
	}
	return errnoSuccess
}

func wasiClockResGet(_ context.Context, mod api.Module, s []uint64) uint32 {
	var res uint64
	switch uint32(s[0]) {
	case 0: // realtime
		res = 1000
	case 1: // monotonic
		res = 1
	default:
		return errnoInval
	}
	if !mod.Memory().WriteUint64Le(uint32(s[1]), res) {
		return errnoFault
	}
	return errnoSuccess
}

func clockNow(id uint32) (uint64, bool) {
	switch id {
	case 0:
		return uint64(time.Now().UnixNano()), true
	case 1:
		return uint64(time.Since(wasiStart).Nanoseconds()) + 1, true
	}
	return 0, false
}

func wasiClockTimeGet(_ context.Context, mod api.Module, s []uint64) uint32 {
	now, ok := clockNow(uint32(s[0]))
	if !ok {
		return errnoInval
	}
	if !mod.Memory().WriteUint64Le(uint32(s[2]), now) {
		return errnoFault
	}
	return errnoSuccess
}

// wasiFdstatGet describes stdin, stdout and stderr as character devices
// (not seekable, blocking); nothing else is open.
func wasiFdstatGet(_ context.Context, mod api.Module, s []uint64) uint32 {
	fd := uint32(s[0])
	if fd > 2 {
		return errnoBadf
	}
	buf, ok := mod.Memory().Read(uint32(s[1]), 24)
	if !ok {
		return errnoFault
	}
	clear(buf)
	buf[0] = 2                     // FILETYPE_CHARACTER_DEVICE
	rights := uint64(1<<3 | 1<<27) // FD_FDSTAT_SET_FLAGS, POLL_FD_READWRITE
	if fd == 0 {
		rights |= 1 << 1 // FD_READ
	} else {
		rights |= 1 << 6 // FD_WRITE
	}
	binary.LittleEndian.PutUint64(buf[8:], rights)
	return errnoSuccess
}

// wasiFdRead: stdin is always at end of file.
func wasiFdRead(_ context.Context, mod api.Module, s []uint64) uint32 {
	if uint32(s[0]) != 0 {
		return errnoBadf
	}
	if !mod.Memory().WriteUint32Le(uint32(s[3]), 0) {
		return errnoFault
	}
	return errnoSuccess
}

// wasiFdWrite appends what the guest writes to stdout or stderr to the
// call's log: at most fdWriteMaxIovecs iovecs, at most fdWriteMaxBytes
// copied, nothing once the log is full. Every byte is reported as written so
// the guest does not retry.
func wasiFdWrite(ctx context.Context, mod api.Module, s []uint64) uint32 {
	fd, iovs, iovsLen, resultPtr := uint32(s[0]), uint32(s[1]), uint32(s[2]), uint32(s[3])
	stream := "stdout"
	switch fd {
	case 1:
	case 2:
		stream = "stderr"
	default:
		return errnoBadf
	}
	if iovsLen > fdWriteMaxIovecs {
		return errnoInval
	}
	mem := mod.Memory()
	vec, ok := mem.Read(iovs, iovsLen*8)
	if !ok {
		return errnoFault
	}
	log, _ := ctx.Value(callLogKey{}).(*callLog)
	budget := 0
	if log != nil {
		budget = min(log.room(), fdWriteMaxBytes)
	}
	size := uint64(mem.Size())
	var total uint64
	for i := uint32(0); i < iovsLen; i++ {
		ptr := binary.LittleEndian.Uint32(vec[i*8:])
		n := binary.LittleEndian.Uint32(vec[i*8+4:])
		if uint64(ptr)+uint64(n) > size {
			return errnoFault
		}
		total += uint64(n)
		if budget > 0 && n > 0 {
			take := min(n, uint32(budget))
			b, _ := mem.Read(ptr, take)
			log.write(stream, b)
			budget -= int(take)
		}
	}
	if !mem.WriteUint32Le(resultPtr, uint32(min(total, math.MaxUint32))) {
		return errnoFault
	}
	return errnoSuccess
}

// wasiRandomGet fills the buffer from crypto/rand, checking the deadline
// between chunks.
func wasiRandomGet(ctx context.Context, mod api.Module, s []uint64) uint32 {
	buf, ok := mod.Memory().Read(uint32(s[0]), uint32(s[1]))
	if !ok {
		return errnoFault
	}
	for len(buf) > 0 {
		checkDeadline(ctx, mod)
		n := min(len(buf), randomChunk)
		if _, err := rand.Read(buf[:n]); err != nil {
			return errnoNosys
		}
		buf = buf[n:]
	}
	return errnoSuccess
}

// wasiPollOneoff supports what reactors use it for: sleeping (clock
// subscriptions) and readiness of the standard streams (always ready). A
// sleep lasts at most maxGuestSleep and ends early with the call's deadline;
// the guest sees its clock event and, if its timer is not yet due, sleeps
// again, so a deadline always interrupts it.
func wasiPollOneoff(ctx context.Context, mod api.Module, s []uint64) uint32 {
	in, out, nsubs, neventsPtr := uint32(s[0]), uint32(s[1]), uint32(s[2]), uint32(s[3])
	if nsubs == 0 || nsubs > pollMaxSubscriptions {
		return errnoInval
	}
	mem := mod.Memory()
	subs, ok := mem.Read(in, nsubs*48)
	if !ok {
		return errnoFault
	}
	events, ok := mem.Read(out, nsubs*32)
	if !ok {
		return errnoFault
	}
	var (
		nevents  uint32
		sleep    = time.Duration(-1)
		clockSub []uint32
	)
	event := func(userdata []byte, errno uint16, typ byte) {
		e := events[nevents*32 : nevents*32+32]
		clear(e)
		copy(e[0:8], userdata)
		binary.LittleEndian.PutUint16(e[8:], errno)
		e[10] = typ
		nevents++
	}
	for i := uint32(0); i < nsubs; i++ {
		sub := subs[i*48 : i*48+48]
		switch typ := sub[8]; typ {
		case 0: // clock
			timeout := binary.LittleEndian.Uint64(sub[24:])
			now, ok := clockNow(binary.LittleEndian.Uint32(sub[16:]))
			if !ok {
				event(sub[0:8], errnoInval, 0)
				continue
			}
			d := time.Duration(min(timeout, math.MaxInt64))
			if binary.LittleEndian.Uint16(sub[40:])&1 != 0 { // absolute
				d = 0
				if timeout > now {
					d = time.Duration(min(timeout-now, math.MaxInt64))
				}
			}
			if sleep < 0 || d < sleep {
				sleep = d
			}
			clockSub = append(clockSub, i)
		case 1, 2: // fd_read, fd_write: the standard streams are always ready
			fd := binary.LittleEndian.Uint32(sub[16:])
			errno := uint16(errnoBadf)
			if (typ == 1 && fd == 0) || (typ == 2 && (fd == 1 || fd == 2)) {
				errno = errnoSuccess
			}
			event(sub[0:8], errno, typ)
		default:
			event(sub[0:8], errnoInval, typ)
		}
	}
	if nevents == 0 && sleep >= 0 {
		t := time.NewTimer(min(sleep, maxGuestSleep))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			checkDeadline(ctx, mod)
		}
		for _, i := range clockSub {
			event(subs[i*48:i*48+8], errnoSuccess, 0)
		}
	}
	if !mem.WriteUint32Le(neventsPtr, nevents) {
		return errnoFault
	}
	return errnoSuccess
}
