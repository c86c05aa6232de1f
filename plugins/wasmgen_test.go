package plugins

import "bytes"

// wasmModule builds WebAssembly binaries byte by byte, so the hostile suite
// can generate each attack from a few lines of Go instead of committing
// megabytes of fixtures.
type wasmModule struct {
	types    []wasmType
	imports  [][]byte // encoded import entries
	funcs    []uint32 // type index of each defined function
	tables   [][]byte // encoded table types
	memory   []byte   // encoded memory limits, nil for none
	globals  [][]byte // encoded globals
	exports  [][]byte // encoded export entries
	start    *uint32
	elems    [][]byte // encoded element segments
	dataCnt  bool     // emit a data count section
	codes    [][]byte // encoded bodies (without their size)
	datas    [][]byte // encoded data segments
	rawCode  []byte   // if set, the code section's content as is
	extraSec [][]byte // whole extra sections appended at the end
}

type wasmType struct{ params, results []byte }

const (
	i32 = 0x7f
	i64 = 0x7e
)

func leb(v uint64) []byte { return appendLEB(nil, v) }

func appendLEB(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

func sleb(v int64) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func wasmName(s string) []byte { return append(leb(uint64(len(s))), s...) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// typeIndex returns the index of a function type, adding it if needed.
func (m *wasmModule) typeIndex(params, results []byte) uint32 {
	for i, t := range m.types {
		if bytes.Equal(t.params, params) && bytes.Equal(t.results, results) {
			return uint32(i)
		}
	}
	m.types = append(m.types, wasmType{params, results})
	return uint32(len(m.types) - 1)
}

// importFunc adds a function import and returns its function index (imports
// must all be added before any function).
func (m *wasmModule) importFunc(mod, name string, params, results []byte) uint32 {
	t := m.typeIndex(params, results)
	m.imports = append(m.imports, cat(wasmName(mod), wasmName(name), []byte{0x00}, leb(uint64(t))))
	return uint32(len(m.imports) - 1)
}

// function adds a function with locals (encoded local declarations, nil for
// none) and code (its instructions, without the final end) and returns its
// index.
func (m *wasmModule) function(params, results []byte, locals [][2]uint64, code []byte) uint32 {
	m.funcs = append(m.funcs, m.typeIndex(params, results))
	body := leb(uint64(len(locals)))
	for _, l := range locals {
		body = append(appendLEB(body, l[0]), byte(l[1]))
	}
	body = append(append(body, code...), 0x0b)
	m.codes = append(m.codes, body)
	return uint32(len(m.imports) + len(m.funcs) - 1)
}

func (m *wasmModule) export(name string, kind byte, index uint32) {
	m.exports = append(m.exports, cat(wasmName(name), []byte{kind}, leb(uint64(index))))
}

func section(id byte, content []byte) []byte {
	return cat([]byte{id}, leb(uint64(len(content))), content)
}

func vec(items [][]byte) []byte { return cat(leb(uint64(len(items))), bytes.Join(items, nil)) }

func (m *wasmModule) bytes() []byte {
	out := []byte("\x00asm\x01\x00\x00\x00")
	if len(m.types) > 0 {
		var ts [][]byte
		for _, t := range m.types {
			ts = append(ts, cat([]byte{0x60}, leb(uint64(len(t.params))), t.params, leb(uint64(len(t.results))), t.results))
		}
		out = append(out, section(1, vec(ts))...)
	}
	if len(m.imports) > 0 {
		out = append(out, section(2, vec(m.imports))...)
	}
	if len(m.funcs) > 0 {
		var fs [][]byte
		for _, f := range m.funcs {
			fs = append(fs, leb(uint64(f)))
		}
		out = append(out, section(3, vec(fs))...)
	}
	if len(m.tables) > 0 {
		out = append(out, section(4, vec(m.tables))...)
	}
	if m.memory != nil {
		out = append(out, section(5, vec([][]byte{m.memory}))...)
	}
	if len(m.globals) > 0 {
		out = append(out, section(6, vec(m.globals))...)
	}
	if len(m.exports) > 0 {
		out = append(out, section(7, vec(m.exports))...)
	}
	if m.start != nil {
		out = append(out, section(8, leb(uint64(*m.start)))...)
	}
	if len(m.elems) > 0 {
		out = append(out, section(9, vec(m.elems))...)
	}
	if m.dataCnt {
		out = append(out, section(12, leb(uint64(len(m.datas))))...)
	}
	if m.rawCode != nil {
		out = append(out, section(10, m.rawCode)...)
	} else if len(m.codes) > 0 {
		var cs [][]byte
		for _, c := range m.codes {
			cs = append(cs, cat(leb(uint64(len(c))), c))
		}
		out = append(out, section(10, vec(cs))...)
	}
	if len(m.datas) > 0 {
		out = append(out, section(11, vec(m.datas))...)
	}
	for _, s := range m.extraSec {
		out = append(out, s...)
	}
	return out
}

// Instructions used by the generated modules.
var (
	opEnd         = []byte{0x0b}
	opUnreachable = []byte{0x00}
	opDrop        = []byte{0x1a}
)

func i32Const(v int32) []byte  { return cat([]byte{0x41}, sleb(int64(v))) }
func i64Const(v int64) []byte  { return cat([]byte{0x42}, sleb(v)) }
func localGet(i uint32) []byte { return cat([]byte{0x20}, leb(uint64(i))) }
func call(f uint32) []byte     { return cat([]byte{0x10}, leb(uint64(f))) }

// allowResult is the i64 pm_handle returns for the {"allow":true} document
// abiModule places at offset 16.
const allowResult = 16<<32 | 14

// abiModule returns a module that satisfies the ABI: one memory page
// (exported), data {"allow":true} at 16, pm_alloc returning 1024 and
// pm_handle running handle (instructions leaving an i64). Callers add their
// hostile parts before calling bytes().
func abiModule(handle []byte) *wasmModule {
	m := &wasmModule{memory: []byte{0x01, 0x01, 0x02}} // min 1, max 2
	return m.withABI(handle)
}

// withABI adds the ABI's exports to m after its imports were declared.
func (m *wasmModule) withABI(handle []byte) *wasmModule {
	m.export("memory", kindMemory, 0)
	alloc := m.function([]byte{i32}, []byte{i32}, nil, i32Const(1024))
	h := m.function([]byte{i32, i32, i32, i32}, []byte{i64}, nil, handle)
	m.export("pm_alloc", kindFunc, alloc)
	m.export("pm_handle", kindFunc, h)
	m.datas = append(m.datas, cat([]byte{0x00}, i32Const(16), opEnd, wasmName(`{"allow":true}`)))
	return m
}
