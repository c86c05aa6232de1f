package plugins

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
)

// repeat returns n copies of b.
func repeat(b []byte, n int) []byte { return bytes.Repeat(b, n) }

// nestedBlocks is depth nested empty blocks.
func nestedBlocks(depth int) []byte {
	return cat(repeat([]byte{0x02, 0x40}, depth), repeat(opEnd, depth))
}

// brTable is a block holding a br_table with n targets (all to the block).
func brTable(n int) []byte {
	return cat([]byte{0x02, 0x40}, i32Const(0), []byte{0x0e}, leb(uint64(n)), repeat([]byte{0x00}, n+1), opEnd)
}

func localsBomb(n uint64) []byte {
	m := abiModule(i64Const(allowResult))
	m.function(nil, nil, [][2]uint64{{n, i64}}, nil)
	return m.bytes()
}

// precheckCases are modules at and just over each structural limit, and
// malformed ones. want is a substring of the refusal, "" for accepted.
func precheckCases() []struct {
	name string
	wasm []byte
	want string
} {
	type tc = struct {
		name string
		wasm []byte
		want string
	}
	var cases []tc
	add := func(name, want string, build func(m *wasmModule)) {
		m := &wasmModule{memory: []byte{0x01, 0x01, 0x02}}
		build(m)
		m.withABI(i64Const(allowResult))
		cases = append(cases, tc{name, m.bytes(), want})
	}
	fn := func(m *wasmModule, locals [][2]uint64, code []byte) { m.function(nil, nil, locals, code) }

	add("Minimal", "", func(*wasmModule) {})
	cases = append(cases,
		tc{"Locals2^32-1", localsBomb(1<<32 - 1), "the limit is 50000"},
		tc{"Locals100M", localsBomb(100_000_000), "the limit is 50000"},
		tc{"Locals50000", localsBomb(50_000), ""},
		tc{"Locals50001", localsBomb(50_001), "the limit is 50000"},
	)
	add("LocalGroupsOverflow", "the limit is 50000", func(m *wasmModule) {
		fn(m, [][2]uint64{{1<<32 - 1, i32}, {1<<32 - 1, i64}, {2, i32}}, nil)
	})
	add("TotalLocals", "in total, the limit is 1000000", func(m *wasmModule) {
		for i := 0; i < 21; i++ {
			fn(m, [][2]uint64{{50_000, i32}}, nil)
		}
	})
	add("LocalsTimesBlocks", "locals times blocks", func(m *wasmModule) {
		for i := 0; i < 3; i++ {
			fn(m, [][2]uint64{{50_000, i32}}, repeat(nestedBlocks(1), 700))
		}
	})
	add("Depth2000", "", func(m *wasmModule) { fn(m, nil, nestedBlocks(LimitNestingDepth-1)) })
	add("Depth2001", "nests blocks 2001 deep, the limit is 2000", func(m *wasmModule) { fn(m, nil, nestedBlocks(LimitNestingDepth)) })
	add("Depth100k", "the limit is 2000", func(m *wasmModule) { fn(m, nil, nestedBlocks(100_000)) })
	add("Depth2M", "body of 6000002 bytes", func(m *wasmModule) { fn(m, nil, nestedBlocks(2_000_000)) })
	add("BrTable8192", "", func(m *wasmModule) { fn(m, nil, brTable(LimitBrTableTargets)) })
	add("BrTable8193", "8193 br_table targets, the limit is 8192", func(m *wasmModule) { fn(m, nil, brTable(LimitBrTableTargets+1)) })
	add("BrTable100k", "the limit is 8192", func(m *wasmModule) { fn(m, nil, brTable(100_000)) })
	add("BrTable1.5M", "body of 1500012 bytes", func(m *wasmModule) { fn(m, nil, brTable(1_500_000)) })
	add("BrTableTotal", "br_tables have", func(m *wasmModule) {
		for i := 0; i < 62; i++ {
			fn(m, nil, brTable(LimitBrTableTargets))
		}
	})
	add("Functions", "50002 functions, the limit is 50000", func(m *wasmModule) {
		for i := 0; i < LimitFunctions; i++ {
			fn(m, nil, nil)
		}
	})
	add("Body1MiB", "", func(m *wasmModule) { fn(m, nil, repeat([]byte{0x01}, LimitBodyBytes-4)) })
	add("BodyOver1MiB", "the limit is 1048576", func(m *wasmModule) { fn(m, nil, repeat([]byte{0x01}, LimitBodyBytes)) })
	add("Globals", "1001 globals, the limit is 1000", func(m *wasmModule) {
		for i := 0; i < LimitGlobals+1; i++ {
			m.globals = append(m.globals, cat([]byte{i32, 0x01}, i32Const(0), opEnd))
		}
	})
	add("TableWithoutMaximum", "", func(m *wasmModule) { m.tables = append(m.tables, []byte{0x70, 0x00, 0x01}) })
	add("TableHugeMaximum", "", func(m *wasmModule) { m.tables = append(m.tables, cat([]byte{0x70, 0x01, 0x01}, leb(0xFFFFFFFF))) })
	add("TableHugeMinimum", "declares a minimum of 134217728 entries, the limit is 100000", func(m *wasmModule) {
		m.tables = append(m.tables, cat([]byte{0x70, 0x00}, leb(1<<27)))
	})
	add("EightTables", "8 tables, the limit is 2", func(m *wasmModule) {
		for i := 0; i < 8; i++ {
			m.tables = append(m.tables, cat([]byte{0x70, 0x00}, leb(1<<27)))
		}
	})
	add("ElementEntries", "entries in total, the limit is 200000", func(m *wasmModule) {
		m.tables = append(m.tables, cat([]byte{0x70, 0x00}, leb(LimitTableEntries)))
		f := m.function(nil, nil, nil, nil)
		for i := 0; i < 3; i++ {
			m.elems = append(m.elems, cat([]byte{0x00}, i32Const(0), opEnd, leb(70_000), repeat(leb(uint64(f)), 70_000)))
		}
	})
	add("Exports", "1003 exports, the limit is 1000", func(m *wasmModule) {
		f := m.function(nil, nil, nil, nil)
		for i := 0; i < LimitExports; i++ {
			m.export("e"+strconv.Itoa(i), kindFunc, f)
		}
	})
	add("DataSegments", "100001 data segments, the limit is 100000", func(m *wasmModule) {
		for i := 0; i < LimitDataSegments; i++ {
			m.datas = append(m.datas, []byte{0x01, 0x00})
		}
	})
	add("Types", "the limit is 10000", func(m *wasmModule) {
		for i := 0; i <= LimitTypes; i++ {
			m.types = append(m.types, wasmType{params: repeat([]byte{i32}, i%50), results: repeat([]byte{i64}, i/50)})
		}
	})
	add("TypeArity", "101 parameters or results in one type, the limit is 100", func(m *wasmModule) {
		m.typeIndex(repeat([]byte{i32}, 101), nil)
	})
	for _, imp := range []struct{ name, kind string }{{"Global", "\x03\x7f\x00"}, {"Table", "\x01\x70\x00\x01"}, {"Memory", "\x02\x00\x01"}} {
		add("Imports"+imp.name, "import env.thing (a "+strings.ToLower(imp.name)+") is not allowed", func(m *wasmModule) {
			m.imports = append(m.imports, cat(wasmName("env"), wasmName("thing"), []byte(imp.kind)))
		})
	}
	add("Imports", "101 imports, the limit is 100", func(m *wasmModule) {
		for i := 0; i <= LimitImports; i++ {
			m.importFunc("wasi_snapshot_preview1", "sched_yield", nil, []byte{i32})
		}
	})

	// Malformed modules.
	good := abiModule(i64Const(allowResult)).bytes()
	cases = append(cases,
		tc{"Empty", nil, "not a WebAssembly"},
		tc{"BadVersion", []byte("\x00asm\x02\x00\x00\x00"), "version"},
		tc{"Truncated", good[:len(good)-3], "past the end"},
		tc{"SectionTooLong", append([]byte("\x00asm\x01\x00\x00\x00\x01\xff\xff\xff\xff\x0f"), 0), "past the end"},
		tc{"LEBTooLong", []byte("\x00asm\x01\x00\x00\x00\x01\x80\x80\x80\x80\x80\x00"), "integer too large"},
		tc{"UnknownSection", []byte("\x00asm\x01\x00\x00\x00\x0e\x00"), "unknown section"},
		tc{"OutOfOrder", []byte("\x00asm\x01\x00\x00\x00\x03\x01\x00\x01\x01\x00"), "out of order"},
	)
	nameSection := func(sub byte, content []byte) []byte {
		return section(0, cat(wasmName("name"), []byte{sub}, leb(uint64(len(content))), content))
	}
	add("NameSection", "", func(m *wasmModule) {
		m.extraSec = append(m.extraSec, nameSection(1, cat(leb(1), leb(0), wasmName("pm_alloc"))),
			section(0, cat(wasmName("producers"), repeat([]byte{0xff}, 100))))
	})
	add("NameSectionHugeCount", "4294967295 function names, the limit is 50100", func(m *wasmModule) {
		m.extraSec = append(m.extraSec, nameSection(1, cat(leb(1<<32-1), leb(0), wasmName("x"))))
	})
	add("NameSectionHugeLocals", "4294967295 local names of a function, the limit is 50000", func(m *wasmModule) {
		m.extraSec = append(m.extraSec, nameSection(2, cat(leb(1), leb(0), leb(1<<32-1), leb(0), wasmName("x"))))
	})
	add("NameSectionHugeName", "runs past the end", func(m *wasmModule) {
		m.extraSec = append(m.extraSec, nameSection(0, leb(1<<32-1)))
	})
	add("UnknownOpcode", "unsupported opcode 0xff", func(m *wasmModule) { fn(m, nil, []byte{0xff}) })
	add("TailCall", "unsupported opcode 0x12", func(m *wasmModule) { fn(m, nil, []byte{0x12, 0x00}) })
	add("UnknownSIMD", "unsupported opcode 0xfd 256", func(m *wasmModule) { fn(m, nil, cat([]byte{0xfd}, leb(256))) })
	add("UnclosedBlock", "ends inside a block", func(m *wasmModule) { fn(m, nil, []byte{0x02, 0x40}) })
	add("BytesAfterEnd", "bytes after its final end", func(m *wasmModule) { fn(m, nil, []byte{0x0b, 0x01}) })
	add("EveryImmediate", "", func(m *wasmModule) {
		f := m.function(nil, nil, nil, nil)
		m.tables = append(m.tables, []byte{0x70, 0x01, 0x01, 0x01})
		m.globals = append(m.globals, cat([]byte{i32, 0x01}, i32Const(0), opEnd))
		m.elems = append(m.elems, cat([]byte{0x01, 0x00}, leb(1), leb(uint64(f))))
		m.datas = append(m.datas, []byte{0x01, 0x01, 'x'})
		m.dataCnt = true
		fn(m, [][2]uint64{{1, i32}, {1, 0x7b}}, cat(
			[]byte{0x02, 0x40, 0x03, 0x40}, i32Const(0), []byte{0x04, 0x40, 0x05, 0x0b, 0x0b, 0x0b}, // block loop if else
			i32Const(1), []byte{0x0d, 0x00}, // br_if 0
			call(f), i32Const(0), []byte{0x11, 0x00, 0x00}, // call, call_indirect
			i32Const(1), i32Const(2), i32Const(0), []byte{0x1c, 0x01, i32, 0x1a}, // select t, drop
			[]byte{0x23, 0x00, 0x24, 0x00},        // global.get/set
			i32Const(0), []byte{0x25, 0x00, 0x1a}, // table.get, drop
			i32Const(0), []byte{0x28, 0x02, 0x00, 0x21, 0x00}, // i32.load, local.set
			[]byte{0x3f, 0x00, 0x40, 0x00, 0x1a}, // memory.size, memory.grow, drop
			i64Const(-1), []byte{0x1a, 0x43, 0, 0, 0, 0, 0x1a, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0x1a},
			[]byte{0xd0, 0x70, 0xd1, 0x1a, 0xd2, 0x00, 0x1a}, // ref.null, ref.is_null, ref.func
			[]byte{0x43, 0, 0, 0, 0, 0xfc, 0x00, 0x1a},       // i32.trunc_sat_f32_s
			i32Const(0), i32Const(0), i32Const(0), []byte{0xfc, 0x08, 0x00, 0x00}, // memory.init
			[]byte{0xfc, 0x09, 0x00},                                              // data.drop
			i32Const(0), i32Const(0), i32Const(0), []byte{0xfc, 0x0a, 0x00, 0x00}, // memory.copy
			i32Const(0), i32Const(0), i32Const(0), []byte{0xfc, 0x0b, 0x00}, // memory.fill
			i32Const(0), i32Const(0), i32Const(0), []byte{0xfc, 0x0c, 0x00, 0x00}, // table.init
			[]byte{0xfc, 0x0d, 0x00},                                        // elem.drop
			[]byte{0xd0, 0x70}, i32Const(0), []byte{0xfc, 0x0f, 0x00, 0x1a}, // table.grow
			[]byte{0xfc, 0x10, 0x00, 0x1a},                                                        // table.size
			cat([]byte{0xfd, 0x0c}, repeat([]byte{1}, 16), []byte{0x21, 0x01}),                    // v128.const
			[]byte{0x20, 0x01, 0x20, 0x01, 0xfd, 0x0d}, repeat([]byte{0}, 16), []byte{0x21, 0x01}, // i8x16.shuffle
			[]byte{0x20, 0x01, 0xfd, 0x15, 0x03, 0x1a}, // i8x16.extract_lane_s
			i32Const(0), []byte{0xfd, 0x00, 0x04, 0x00, 0x21, 0x01}, // v128.load
			i32Const(0), []byte{0x20, 0x01, 0xfd, 0x54, 0x00, 0x00, 0x01, 0x21, 0x01}, // v128.load8_lane
			[]byte{0x20, 0x01, 0x20, 0x01, 0xfd, 0x4e, 0x21, 0x01}, // v128.and
			i32Const(0), []byte{0x0e, 0x01, 0x00, 0x00}, // br_table
		))
	})
	return cases
}

func TestPrecheckLimits(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithDebugInfoEnabled(false))
	t.Cleanup(func() { rt.Close(ctx) })
	for _, tt := range precheckCases() {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			shape, err := precheck(tt.wasm)
			elapsed := time.Since(start)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("precheck refused a module within the limits: %v", err)
				}
				// The bounded module must still pass, and its tables have a
				// maximum within the limit.
				bounded := boundTables(tt.wasm, shape)
				s2, err := precheck(bounded)
				if err != nil {
					t.Fatalf("module with bounded tables: %v", err)
				}
				for _, tab := range s2.tables {
					if !tab.hasMax || tab.max > LimitTableEntries {
						t.Errorf("table still unbounded: %+v", tab)
					}
				}
				// The generated modules are real: wazero accepts the small
				// ones (the others only cost time here).
				if len(bounded) <= 64<<10 {
					if _, err := rt.CompileModule(ctx, bounded); err != nil {
						t.Errorf("wazero refuses the module: %v", err)
					}
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("precheck = %v, want an error containing %q", err, tt.want)
			}
			t.Logf("%d bytes, %v: %v", len(tt.wasm), elapsed, err)
		})
	}
}

// The 125-byte module declaring 2^32-1 locals is refused in microseconds
// and without allocating in proportion to what it declares; a scan of 8 MiB
// of worst-case nesting stays linear.
func TestPrecheckIsBounded(t *testing.T) {
	bomb := localsBomb(1<<32 - 1)
	if len(bomb) > 125 {
		t.Fatalf("the locals bomb is %d bytes", len(bomb))
	}
	allocs := testing.AllocsPerRun(100, func() { _, _ = precheck(bomb) })
	if allocs > 50 {
		t.Errorf("precheck of the locals bomb allocates %v times", allocs)
	}
	start := time.Now()
	for i := 0; i < 1000; i++ {
		if _, err := precheck(bomb); err == nil {
			t.Fatal("locals bomb accepted")
		}
	}
	if per := time.Since(start) / 1000; per > time.Millisecond {
		t.Errorf("precheck of the locals bomb takes %v, want microseconds", per)
	}

	// 8 MiB of functions nested as deep as allowed.
	m := abiModule(i64Const(allowResult))
	body := nestedBlocks(LimitNestingDepth - 1)
	for size := 0; size+len(body) < DefaultMaxModuleBytes-1024; size += len(body) + 4 {
		m.function(nil, nil, nil, body)
	}
	big := m.bytes()
	start = time.Now()
	_, err := precheck(big)
	t.Logf("precheck of %d bytes: %v (%v)", len(big), time.Since(start), err)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("precheck of 8 MiB took %v", d)
	}
}

// precheckSeeds are the corpus the fuzz target starts from (and that every
// normal test run checks).
func precheckSeeds(t testing.TB) [][]byte {
	seeds := [][]byte{}
	for _, tt := range precheckCases() {
		if len(tt.wasm) < 64<<10 {
			seeds = append(seeds, tt.wasm)
		}
	}
	for _, f := range []string{"good.wasm", "hostile.wasm", "notify.wasm", "patch.wasm", "import_unknown.wasm", "init_loop.wasm", "../../examples/plugins/naming-policy/naming-policy.wasm"} {
		b, err := os.ReadFile("testdata/" + f)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	return seeds
}

// FuzzPrecheck: whatever the bytes, precheck returns (never panics, never
// allocates beyond its limits), and whatever it accepts wazero decodes and
// compiles (or refuses) without running away in time or memory. Run it with
// `go test -fuzz FuzzPrecheck ./plugins`; the seed corpus (and any failing
// input kept in testdata/fuzz) runs in every `go test`.
func FuzzPrecheck(f *testing.F) {
	for _, s := range precheckSeeds(f) {
		f.Add(s)
	}
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithMemoryLimitPages(256).WithDebugInfoEnabled(false))
	f.Cleanup(func() { rt.Close(ctx) })
	f.Fuzz(func(t *testing.T, wasm []byte) {
		shape, err := precheck(wasm)
		var pe *precheckError
		if err != nil && !errors.As(err, &pe) {
			t.Fatalf("precheck returned %T: %v", err, err)
		}
		if err == nil {
			bounded := boundTables(wasm, shape)
			if _, err := precheck(bounded); err != nil {
				t.Fatalf("boundTables broke the module: %v", err)
			}
		}
		if err != nil {
			return // never give wazero what precheck refuses: that is the point
		}
		// Accepted: wazero must be able to decode (and compile or refuse) it
		// without running away. A crash or an out-of-memory here is a
		// limit precheck lacks. (Shapes that are merely slow to compile
		// are the compile sandbox's business, and would only slow the
		// fuzzer down.)
		if st := shape.stats; len(wasm) > 64<<10 || st.LocalsTimesBlocks > 5_000_000 || st.TotalBrTable > 20_000 {
			return
		}
		if c, err := rt.CompileModule(ctx, boundTables(wasm, shape)); err == nil {
			c.Close(ctx)
		}
	})
}
