package plugins

import (
	"fmt"
	"unicode/utf8"
)

// Structural limits of a module, checked by precheck before any compiler
// sees the bytes (ABI.md section 5 lists them). wazero's memory cap bounds
// linear memory only: without these, a 125-byte module declaring 2^32-1
// locals kills the process at compile time, a table without a maximum lets
// one table.grow allocate gigabytes, and deep nesting or a huge br_table keeps
// the compiler busy for minutes. Each is far above what Go, Rust or
// hand-written plugins need (the Go examples use a small fraction of each;
// see RATIONALE.md), and low enough that the largest module they admit
// compiles within the compile deadline.
const (
	LimitTypes              = 10_000    // function types
	LimitTypeArity          = 100       // parameters, and results, of one function type
	LimitImports            = 100       // imports (functions only; ABI.md lists which)
	LimitFunctions          = 50_000    // functions defined by the module
	LimitTables             = 2         // tables
	LimitTableEntries       = 100_000   // declared maximum of each table (a maximum is required)
	LimitGlobals            = 1_000     // globals
	LimitExports            = 1_000     // exports
	LimitElementSegments    = 1_000     // element segments
	LimitElementEntries     = 200_000   // function references in all element segments together
	LimitDataSegments       = 100_000   // data segments
	LimitFunctionLocals     = 50_000    // parameters plus locals of one function (as V8)
	LimitTotalLocals        = 1_000_000 // locals of all functions together
	LimitBodyBytes          = 1 << 20   // bytes of one function body
	LimitNestingDepth       = 2_000     // nested blocks, loops and ifs in one function
	LimitBrTableTargets     = 8_192     // targets of one br_table
	LimitTotalBrTableTarget = 500_000   // targets of all br_tables together
	// LimitLocalsTimesBlocks bounds, over all functions, each function's
	// locals times its blocks: the compiler's work grows with that product
	// (50,000 locals and 900 blocks in a 5 KB function take a second).
	LimitLocalsTimesBlocks = 100_000_000
	limitNameBytes         = 1_024 // one import or export name
)

// moduleShape is what precheck learned about a module: enough to enforce the
// ABI's imports and exports without compiling it, plus counts for
// diagnostics and tests.
type moduleShape struct {
	types       []funcType
	funcTypes   []uint32 // type index of every function, imported ones first
	importFuncs int
	imports     []importEntry
	exports     map[string]exportEntry
	memories    int
	tables      []tableEntry
	tableStart  int // offset of the table section's id byte; 0: none
	tableEnd    int // offset just past the table section
	memMin      uint32
	memMax      uint32
	memHasMax   bool

	stats shapeStats
}

// shapeStats are the sizes precheck measured, for tests and RATIONALE.md.
type shapeStats struct {
	Functions, Globals, Tables, Exports, Imports, Types int
	DataSegments, ElementSegments, ElementEntries       int
	MaxTableEntries                                     uint32
	MaxBodyBytes, MaxDepth, MaxBrTable, TotalBrTable    int
	MaxFunctionLocals                                   uint64
	TotalLocals, LocalsTimesBlocks                      uint64
	Instructions                                        int
}

type funcType struct {
	params, results []byte
}

type importEntry struct {
	module, name string
	kind         byte
	typeIndex    uint32
}

type tableEntry struct {
	elem     byte
	min, max uint32
	hasMax   bool
}

type exportEntry struct {
	kind  byte
	index uint32
}

const (
	kindFunc   = 0x00
	kindTable  = 0x01
	kindMemory = 0x02
	kindGlobal = 0x03
)

var kindNames = map[byte]string{kindFunc: "function", kindTable: "table", kindMemory: "memory", kindGlobal: "global"}

// precheckError is a module the structural check refuses; Host.Load turns it
// into an *InvalidModuleError. limit tells a module over one of the limits
// from a malformed one.
type precheckError struct {
	reason string
	limit  bool
}

func (e *precheckError) Error() string { return e.reason }

// wasmReader decodes the WebAssembly binary format defensively: every read is
// bounds-checked, the first failure is kept (later reads return zero), and
// nothing is allocated in proportion to a count the module declares before
// that count is checked against its limit. Every loop over declared entries
// consumes at least one byte per iteration or stops at the first error, so a
// scan is linear in the module's size whatever it declares.
type wasmReader struct {
	b    []byte
	off  int
	base int // offset of b[0] in the module, for messages
	err  error
}

func (r *wasmReader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = &precheckError{reason: fmt.Sprintf(format, a...) + fmt.Sprintf(" (at byte %d)", r.base+r.off)}
	}
}

// failLimit is fail for a well-formed module over one of the limits.
func (r *wasmReader) failLimit(format string, a ...any) {
	if r.err == nil {
		r.fail(format, a...)
		r.err.(*precheckError).limit = true
	}
}

func (r *wasmReader) done() bool { return r.err != nil || r.off >= len(r.b) }

func (r *wasmReader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.fail("unexpected end of section")
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *wasmReader) bytes(n uint32) []byte {
	if r.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(r.b)-r.off) {
		r.fail("length %d runs past the end of its section", n)
		return nil
	}
	s := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return s
}

// u32 reads an unsigned LEB128 of at most 5 bytes whose value fits 32 bits.
func (r *wasmReader) u32() uint32 {
	var v uint32
	for i := 0; i < 5; i++ {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if i == 4 && c > 0x0f {
			r.fail("integer too large")
			return 0
		}
		v |= uint32(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v
		}
	}
	r.fail("integer representation too long")
	return 0
}

// sleb skips a signed LEB128 of at most bits bits (33 or 64; 32 for i32).
func (r *wasmReader) sleb(bits int) int64 {
	var v int64
	var shift int
	maxBytes := (bits + 6) / 7
	for i := 0; i < maxBytes; i++ {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v
		}
	}
	r.fail("integer representation too long")
	return 0
}

func (r *wasmReader) name() string {
	n := r.u32()
	if n > limitNameBytes {
		r.failLimit("name of %d bytes, the limit is %d", n, limitNameBytes)
		return ""
	}
	b := r.bytes(n)
	if r.err == nil && !utf8.Valid(b) {
		r.fail("name is not valid UTF-8")
	}
	return string(b)
}

func isValType(c byte) bool {
	switch c {
	case 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f: // i32 i64 f32 f64 v128 funcref externref
		return true
	}
	return false
}

func isRefType(c byte) bool { return c == 0x70 || c == 0x6f }

// count reads a vector length and checks it against limit and the bytes left
// (each entry takes at least minBytes).
func (r *wasmReader) count(what string, limit, minBytes int) int {
	n := r.u32()
	if r.err != nil {
		return 0
	}
	if uint64(n) > uint64(limit) {
		r.failLimit("%d %s, the limit is %d", n, what, limit)
		return 0
	}
	if uint64(n)*uint64(minBytes) > uint64(len(r.b)-r.off) {
		r.fail("%d %s do not fit in the section", n, what)
		return 0
	}
	return int(n)
}

// limits reads table or memory limits. Flags beyond 0x01 (shared or 64-bit
// memories) are not supported.
func (r *wasmReader) limits(what string) (min, max uint32, hasMax bool) {
	switch flag := r.byte(); flag {
	case 0x00:
		min = r.u32()
	case 0x01:
		min, max, hasMax = r.u32(), r.u32(), true
		if r.err == nil && max < min {
			r.fail("%s maximum %d is below its minimum %d", what, max, min)
		}
	default:
		if r.err == nil {
			r.fail("%s limits flag 0x%02x (shared or 64-bit) is not supported", what, flag)
		}
	}
	return
}

// Section ids in the order the binary format requires (custom sections may
// appear anywhere; data count sits between element and code).
var sectionOrder = map[byte]int{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 8: 8, 9: 9, 12: 10, 10: 11, 11: 12}

var sectionNames = map[byte]string{0: "custom", 1: "type", 2: "import", 3: "function", 4: "table", 5: "memory",
	6: "global", 7: "export", 8: "start", 9: "element", 10: "code", 11: "data", 12: "data count"}

// precheck scans a module section by section, in time and memory linear in
// its size, and refuses it with a *precheckError naming the limit or the
// malformation it found. It checks structure and limits only; wazero's own
// validation (types of instructions, indices) runs later in the compile
// sandbox.
func precheck(wasm []byte) (*moduleShape, error) {
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" {
		return nil, &precheckError{reason: "not a WebAssembly binary module"}
	}
	if string(wasm[4:8]) != "\x01\x00\x00\x00" {
		return nil, &precheckError{reason: "unsupported WebAssembly binary version (want 1)"}
	}
	s := &moduleShape{exports: map[string]exportEntry{}}
	top := &wasmReader{b: wasm, off: 8}
	last := 0
	definedFuncs := -1 // from the function section; -1: absent
	codeSeen := false
	sawNames := false
	for !top.done() {
		sectionStart := top.off
		id := top.byte()
		size := top.u32()
		start := top.off
		body := top.bytes(size)
		if top.err != nil {
			return nil, top.err
		}
		r := &wasmReader{b: body, base: start}
		if id != 0 {
			order, ok := sectionOrder[id]
			if !ok {
				return nil, &precheckError{reason: fmt.Sprintf("unknown section id %d (at byte %d)", id, start)}
			}
			if order <= last {
				return nil, &precheckError{reason: fmt.Sprintf("%s section out of order or repeated (at byte %d)", sectionNames[id], start)}
			}
			last = order
		}
		switch id {
		case 0: // custom: a name, then bytes nobody executes
			if name := r.name(); name == "name" && r.err == nil {
				if sawNames {
					r.fail("second name section")
				}
				sawNames = true
				readNames(r)
			}
			r.off = len(r.b)
		case 1:
			s.readTypes(r)
		case 2:
			s.readImports(r)
		case 3:
			n := r.count("functions", LimitFunctions, 1)
			s.stats.Functions = n
			definedFuncs = n
			for i := 0; i < n && r.err == nil; i++ {
				t := r.u32()
				if r.err == nil && int(t) >= len(s.types) {
					r.fail("function %d has type %d, which does not exist", i, t)
				}
				s.funcTypes = append(s.funcTypes, t)
			}
		case 4:
			s.tableStart, s.tableEnd = sectionStart, start+int(size)
			s.readTables(r)
		case 5:
			n := r.count("memories", 1, 1)
			for i := 0; i < n && r.err == nil; i++ {
				s.memMin, s.memMax, s.memHasMax = r.limits("memory")
				if r.err == nil && s.memMin > 65536 {
					r.fail("memory minimum of %d pages exceeds 4 GiB", s.memMin)
				}
				s.memories++
			}
		case 6:
			n := r.count("globals", LimitGlobals, 3)
			s.stats.Globals = n
			for i := 0; i < n && r.err == nil; i++ {
				if t := r.byte(); r.err == nil && !isValType(t) {
					r.fail("global %d has an unknown type 0x%02x", i, t)
				}
				if m := r.byte(); r.err == nil && m > 1 {
					r.fail("global %d has a bad mutability flag", i)
				}
				r.constExpr()
			}
		case 7:
			s.readExports(r)
		case 8:
			r.u32()
		case 9:
			s.readElements(r)
		case 12:
			r.u32()
		case 10:
			codeSeen = true
			n := r.count("function bodies", LimitFunctions, 2)
			if r.err == nil && n != max(definedFuncs, 0) {
				r.fail("%d function bodies for %d declared functions", n, max(definedFuncs, 0))
			}
			for i := 0; i < n && r.err == nil; i++ {
				s.readBody(r, i)
			}
		case 11:
			n := r.count("data segments", LimitDataSegments, 2)
			s.stats.DataSegments = n
			for i := 0; i < n && r.err == nil; i++ {
				switch flag := r.u32(); flag {
				case 0:
					r.constExpr()
				case 1:
				case 2:
					r.u32()
					r.constExpr()
				default:
					if r.err == nil {
						r.fail("data segment %d has an unknown flag %d", i, flag)
					}
				}
				r.bytes(r.u32())
			}
		}
		if r.err != nil {
			return nil, r.err
		}
		if r.off != len(r.b) {
			return nil, &precheckError{reason: fmt.Sprintf("%s section has %d bytes left over (at byte %d)", sectionNames[id], len(r.b)-r.off, start+r.off)}
		}
	}
	if definedFuncs > 0 && !codeSeen {
		return nil, &precheckError{reason: "functions are declared but the code section is missing"}
	}
	return s, nil
}

// readNames checks the "name" custom section, which the runtime decodes
// (and allocates for, by the counts it declares) although nothing runs it:
// every count must fit in the bytes that follow.
func readNames(r *wasmReader) {
	for !r.done() {
		id := r.byte()
		size := r.u32()
		start := r.base + r.off
		sub := &wasmReader{b: r.bytes(size), base: start}
		if r.err != nil {
			return
		}
		switch id {
		case 0: // module name
			sub.anyName()
		case 1: // function names
			n := sub.count("function names", LimitFunctions+LimitImports, 2)
			for i := 0; i < n && sub.err == nil; i++ {
				sub.u32()
				sub.anyName()
			}
		case 2: // local names
			n := sub.count("functions with local names", LimitFunctions+LimitImports, 2)
			for i := 0; i < n && sub.err == nil; i++ {
				sub.u32()
				m := sub.count("local names of a function", LimitFunctionLocals, 2)
				for j := 0; j < m && sub.err == nil; j++ {
					sub.u32()
					sub.anyName()
				}
			}
		default:
			sub.off = len(sub.b)
		}
		if sub.err == nil && sub.off != len(sub.b) {
			sub.fail("name subsection %d has %d bytes left over", id, len(sub.b)-sub.off)
		}
		if sub.err != nil {
			r.err = sub.err
			return
		}
	}
}

// anyName reads a UTF-8 name of any length that fits in the section.
func (r *wasmReader) anyName() {
	b := r.bytes(r.u32())
	if r.err == nil && !utf8.Valid(b) {
		r.fail("name is not valid UTF-8")
	}
}

func (s *moduleShape) readTypes(r *wasmReader) {
	n := r.count("function types", LimitTypes, 3)
	s.stats.Types = n
	s.types = make([]funcType, 0, n)
	for i := 0; i < n && r.err == nil; i++ {
		if form := r.byte(); r.err == nil && form != 0x60 {
			r.fail("type %d is not a function type", i)
			return
		}
		var t funcType
		for _, list := range []*[]byte{&t.params, &t.results} {
			m := r.count("parameters or results in one type", LimitTypeArity, 1)
			for j := 0; j < m && r.err == nil; j++ {
				c := r.byte()
				if r.err == nil && !isValType(c) {
					r.fail("type %d has an unknown value type 0x%02x", i, c)
				}
				*list = append(*list, c)
			}
		}
		s.types = append(s.types, t)
	}
}

func (s *moduleShape) readImports(r *wasmReader) {
	n := r.count("imports", LimitImports, 4)
	s.stats.Imports = n
	for i := 0; i < n && r.err == nil; i++ {
		imp := importEntry{module: r.name(), name: r.name(), kind: r.byte()}
		if r.err != nil {
			return
		}
		if imp.kind != kindFunc {
			what, ok := kindNames[imp.kind]
			if !ok {
				r.fail("import %s.%s has an unknown kind 0x%02x", imp.module, imp.name, imp.kind)
				return
			}
			// Refused by name, as ABI.md promises: only functions may be
			// imported (a module owns its memory, tables and globals).
			r.err = &precheckError{limit: true, reason: fmt.Sprintf("import %s.%s (a %s) is not allowed: a plugin may import only the functions listed in ABI.md, and must define its own memory, tables and globals",
				imp.module, imp.name, what)}
			return
		}
		imp.typeIndex = r.u32()
		if r.err == nil && int(imp.typeIndex) >= len(s.types) {
			r.fail("import %s.%s has type %d, which does not exist", imp.module, imp.name, imp.typeIndex)
			return
		}
		s.imports = append(s.imports, imp)
		s.funcTypes = append(s.funcTypes, imp.typeIndex)
		s.importFuncs++
	}
}

func (s *moduleShape) readTables(r *wasmReader) {
	n := r.count("tables", LimitTables, 3)
	s.stats.Tables = n
	for i := 0; i < n && r.err == nil; i++ {
		var t tableEntry
		if t.elem = r.byte(); r.err == nil && !isRefType(t.elem) {
			r.fail("table %d has an unknown element type 0x%02x", i, t.elem)
			return
		}
		t.min, t.max, t.hasMax = r.limits("table")
		if r.err != nil {
			return
		}
		if t.min > LimitTableEntries {
			r.failLimit("table %d declares a minimum of %d entries, the limit is %d", i, t.min, LimitTableEntries)
			return
		}
		s.tables = append(s.tables, t)
		s.stats.MaxTableEntries = maxU32(s.stats.MaxTableEntries, t.min)
	}
}

func maxU32(a, b uint32) uint32 {
	if a > b {
		return a
	}
	return b
}

func (s *moduleShape) readExports(r *wasmReader) {
	n := r.count("exports", LimitExports, 3)
	s.stats.Exports = n
	for i := 0; i < n && r.err == nil; i++ {
		name := r.name()
		e := exportEntry{kind: r.byte(), index: r.u32()}
		if r.err != nil {
			return
		}
		if _, dup := s.exports[name]; dup {
			r.fail("export %q is declared twice", name)
			return
		}
		s.exports[name] = e
	}
}

func (s *moduleShape) readElements(r *wasmReader) {
	n := r.count("element segments", LimitElementSegments, 2)
	s.stats.ElementSegments = n
	for i := 0; i < n && r.err == nil; i++ {
		flag := r.u32()
		if r.err != nil {
			return
		}
		if flag > 7 {
			r.fail("element segment %d has an unknown flag %d", i, flag)
			return
		}
		if flag&0x02 != 0 && flag&0x01 == 0 { // active with an explicit table index
			r.u32()
		}
		if flag&0x01 == 0 { // active: an offset
			r.constExpr()
		}
		if flag&0x03 != 0 { // elemkind (funcs) or reftype (exprs)
			if c := r.byte(); r.err == nil && ((flag&0x04 == 0 && c != 0x00) || (flag&0x04 != 0 && !isRefType(c))) {
				r.fail("element segment %d has an unknown element kind 0x%02x", i, c)
				return
			}
		}
		m := r.count("entries in one element segment", LimitElementEntries, 1)
		s.stats.ElementEntries += m
		if s.stats.ElementEntries > LimitElementEntries {
			r.failLimit("element segments hold %d entries in total, the limit is %d", s.stats.ElementEntries, LimitElementEntries)
			return
		}
		for j := 0; j < m && r.err == nil; j++ {
			if flag&0x04 == 0 {
				r.u32()
			} else {
				r.constExpr()
			}
		}
	}
}

// constExpr reads a constant expression: one constant instruction and end
// (the extended-const proposal is not enabled).
func (r *wasmReader) constExpr() {
	switch op := r.byte(); op {
	case 0x41:
		r.sleb(32)
	case 0x42:
		r.sleb(64)
	case 0x43:
		r.bytes(4)
	case 0x44:
		r.bytes(8)
	case 0x23, 0xd2: // global.get, ref.func
		r.u32()
	case 0xd0: // ref.null
		if c := r.byte(); r.err == nil && !isRefType(c) {
			r.fail("ref.null of an unknown type 0x%02x", c)
		}
	case 0xfd: // v128.const
		if sub := r.u32(); r.err == nil && sub != 12 {
			r.fail("not a constant expression")
		}
		r.bytes(16)
	default:
		if r.err == nil {
			r.fail("not a constant expression (opcode 0x%02x)", op)
		}
	}
	if end := r.byte(); r.err == nil && end != 0x0b {
		r.fail("constant expression not terminated by end")
	}
}

// readBody checks one function body: its size, its locals, and every
// instruction's immediates, nesting depth and br_table size.
func (s *moduleShape) readBody(r *wasmReader, index int) {
	size := r.u32()
	if r.err != nil {
		return
	}
	if size > LimitBodyBytes {
		r.failLimit("function %d has a body of %d bytes, the limit is %d", index, size, LimitBodyBytes)
		return
	}
	start := r.base + r.off
	b := &wasmReader{b: r.bytes(size), base: start}
	if r.err != nil {
		return
	}
	s.stats.MaxBodyBytes = max(s.stats.MaxBodyBytes, int(size))

	var locals uint64
	if fi := s.importFuncs + index; fi < len(s.funcTypes) {
		locals = uint64(len(s.types[s.funcTypes[fi]].params))
	}
	groups := b.count("local declarations", LimitFunctionLocals, 2)
	for g := 0; g < groups && b.err == nil; g++ {
		n := b.u32()
		if t := b.byte(); b.err == nil && !isValType(t) {
			b.fail("function %d declares locals of an unknown type 0x%02x", index, t)
		}
		locals += uint64(n)
		if b.err == nil && locals > LimitFunctionLocals {
			b.failLimit("function %d declares %d or more parameters and locals, the limit is %d", index, locals, LimitFunctionLocals)
		}
	}
	if b.err != nil {
		r.err = b.err
		return
	}
	s.stats.MaxFunctionLocals = max(s.stats.MaxFunctionLocals, locals)
	s.stats.TotalLocals += locals
	if s.stats.TotalLocals > LimitTotalLocals {
		b.failLimit("functions declare %d parameters and locals in total, the limit is %d", s.stats.TotalLocals, LimitTotalLocals)
		r.err = b.err
		return
	}

	depth, blocks := 1, uint64(1) // the function's own block
	for depth > 0 && b.err == nil {
		if b.off >= len(b.b) {
			b.fail("function %d ends inside a block", index)
			break
		}
		s.stats.Instructions++
		switch op := b.byte(); {
		case op == 0x02 || op == 0x03 || op == 0x04: // block, loop, if
			b.blockType(len(s.types))
			depth++
			blocks++
			if depth > LimitNestingDepth {
				b.failLimit("function %d nests blocks %d deep, the limit is %d", index, depth, LimitNestingDepth)
			}
			s.stats.MaxDepth = max(s.stats.MaxDepth, depth)
		case op == 0x0b: // end
			depth--
		case op == 0x0e: // br_table
			n := b.count("br_table targets", LimitBrTableTargets, 1)
			s.stats.MaxBrTable = max(s.stats.MaxBrTable, n)
			s.stats.TotalBrTable += n
			if s.stats.TotalBrTable > LimitTotalBrTableTarget {
				b.failLimit("br_tables have %d targets in total, the limit is %d", s.stats.TotalBrTable, LimitTotalBrTableTarget)
			}
			for i := 0; i <= n && b.err == nil; i++ {
				b.u32()
			}
		default:
			b.immediates(op)
		}
	}
	if b.err == nil && b.off != len(b.b) {
		b.fail("function %d has bytes after its final end", index)
	}
	s.stats.LocalsTimesBlocks += locals * blocks
	if b.err == nil && s.stats.LocalsTimesBlocks > LimitLocalsTimesBlocks {
		b.failLimit("the sum over functions of locals times blocks reaches %d, the limit is %d", s.stats.LocalsTimesBlocks, LimitLocalsTimesBlocks)
	}
	if b.err != nil {
		r.err = b.err
	}
}

func (r *wasmReader) blockType(types int) {
	if r.off < len(r.b) {
		if c := r.b[r.off]; c == 0x40 || isValType(c) {
			r.off++
			return
		}
	}
	if t := r.sleb(33); r.err == nil && (t < 0 || t >= int64(types)) {
		r.fail("block type %d does not exist", t)
	}
}

func (r *wasmReader) memarg() {
	if align := r.u32(); r.err == nil && align > 16 {
		r.fail("memory access alignment 2^%d is not supported", align)
	}
	r.u32()
}

// immediates skips the immediates of one instruction (all but the control
// instructions readBody handles itself), and refuses opcodes outside the
// WebAssembly 2.0 features the runtime enables.
func (r *wasmReader) immediates(op byte) {
	switch {
	case op == 0x00 || op == 0x01 || op == 0x05 || op == 0x0f || op == 0x1a || op == 0x1b:
		// unreachable, nop, else, return, drop, select
	case op == 0x0c || op == 0x0d || op == 0x10: // br, br_if, call
		r.u32()
	case op == 0x11: // call_indirect typeidx tableidx
		r.u32()
		r.u32()
	case op == 0x1c: // select t*
		n := r.count("types of a select", 1, 1)
		for i := 0; i < n && r.err == nil; i++ {
			if c := r.byte(); r.err == nil && !isValType(c) {
				r.fail("select of an unknown type 0x%02x", c)
			}
		}
	case op >= 0x20 && op <= 0x26: // local.*, global.*, table.get/set
		r.u32()
	case op >= 0x28 && op <= 0x3e: // loads and stores
		r.memarg()
	case op == 0x3f || op == 0x40: // memory.size, memory.grow
		if c := r.byte(); r.err == nil && c != 0 {
			r.fail("memory index %d is not supported", c)
		}
	case op == 0x41:
		r.sleb(32)
	case op == 0x42:
		r.sleb(64)
	case op == 0x43:
		r.bytes(4)
	case op == 0x44:
		r.bytes(8)
	case op >= 0x45 && op <= 0xc4: // numeric, sign extension
	case op == 0xd0: // ref.null t
		if c := r.byte(); r.err == nil && !isRefType(c) {
			r.fail("ref.null of an unknown type 0x%02x", c)
		}
	case op == 0xd1: // ref.is_null
	case op == 0xd2: // ref.func
		r.u32()
	case op == 0xfc:
		r.miscImmediates()
	case op == 0xfd:
		r.simdImmediates()
	default:
		r.fail("unsupported opcode 0x%02x", op)
	}
}

// miscImmediates: the 0xFC prefix (saturating truncation, bulk memory, table
// operations).
func (r *wasmReader) miscImmediates() {
	sub := r.u32()
	if r.err != nil {
		return
	}
	switch {
	case sub <= 7: // *.trunc_sat_*
	case sub == 8: // memory.init dataidx 0x00
		r.u32()
		r.zeroByte()
	case sub == 9, sub == 13, sub == 15, sub == 16, sub == 17: // data.drop, elem.drop, table.grow/size/fill
		r.u32()
	case sub == 10: // memory.copy 0x00 0x00
		r.zeroByte()
		r.zeroByte()
	case sub == 11: // memory.fill 0x00
		r.zeroByte()
	case sub == 12, sub == 14: // table.init elemidx tableidx, table.copy tableidx tableidx
		r.u32()
		r.u32()
	default:
		r.fail("unsupported opcode 0xfc %d", sub)
	}
}

func (r *wasmReader) zeroByte() {
	if c := r.byte(); r.err == nil && c != 0 {
		r.fail("memory index %d is not supported", c)
	}
}

// simdImmediates: the 0xFD prefix (fixed-width SIMD, WebAssembly 2.0).
func (r *wasmReader) simdImmediates() {
	sub := r.u32()
	if r.err != nil {
		return
	}
	switch {
	case sub <= 11, sub == 92, sub == 93: // v128 loads and store, load*_zero
		r.memarg()
	case sub == 12, sub == 13: // v128.const, i8x16.shuffle
		r.bytes(16)
	case sub >= 21 && sub <= 34: // extract_lane, replace_lane
		r.byte()
	case sub >= 84 && sub <= 91: // load*_lane, store*_lane
		r.memarg()
		r.byte()
	case sub <= 255: // no immediates
	default:
		r.fail("unsupported opcode 0xfd %d", sub)
	}
}

// boundTables returns the module with every table's maximum set to at most
// LimitTableEntries (added where the module declares none), so table.grow
// can never allocate more; wasm itself is returned when nothing changes.
// Refusing tables without a maximum would refuse every Go plugin: Go's
// linker declares its function table with a minimum only, and never grows
// it.
func boundTables(wasm []byte, s *moduleShape) []byte {
	changed := false
	for _, t := range s.tables {
		if !t.hasMax || t.max > LimitTableEntries {
			changed = true
		}
	}
	if !changed {
		return wasm
	}
	var sec []byte
	sec = binaryAppendU32(sec, uint32(len(s.tables)))
	for _, t := range s.tables {
		max := uint32(LimitTableEntries)
		if t.hasMax && t.max < max {
			max = t.max
		}
		sec = append(sec, t.elem, 0x01)
		sec = binaryAppendU32(sec, t.min)
		sec = binaryAppendU32(sec, max)
	}
	out := make([]byte, 0, len(wasm)+16)
	out = append(out, wasm[:s.tableStart]...)
	out = append(out, 4)
	out = binaryAppendU32(out, uint32(len(sec)))
	out = append(out, sec...)
	return append(out, wasm[s.tableEnd:]...)
}

func binaryAppendU32(b []byte, v uint32) []byte {
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
