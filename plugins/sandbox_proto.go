package plugins

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// The protocol between the host and a sandbox child, over two pipes (fd 3:
// requests to the child, fd 4: answers from it). Every message is a frame:
// a 4-byte big-endian length n, then n bytes: a type byte and the payload,
// made of uvarints and length-prefixed byte strings. The host reads the
// child's frames as hostile input: sizes are bounded before anything is
// allocated, and a malformed frame kills the child.
const sandboxProtocol = 1

// Frame types.
const (
	frameHello    = 'H' // child: protocol version, pid
	frameCompile  = 'C' // host (compile child): module path
	frameCompiled = 'c' // child: status, message
	frameLoad     = 'L' // host (run child): module path
	frameLoaded   = 'l' // child: status, message, logs
	frameCall     = 'X' // host: id, timeout (ns), hook, input
	frameCancel   = 'K' // host: id (the caller's context ended)
	frameResult   = 'R' // child: id, status, message, output, logs, guest time (ns)
)

// Status of a compile, load or call, as the child classified it.
const (
	statusOK             = 0
	statusTimeout        = 1 // ErrTimeout
	statusTrap           = 2 // ErrTrap
	statusMemory         = 3 // ErrMemoryLimit
	statusOutputTooLarge = 4 // ErrOutputTooLarge
	statusInvalidOutput  = 5 // ErrInvalidOutput
	statusCanceled       = 6 // the host canceled the call
	statusInvalidModule  = 7 // compile or load refused the module
	statusStartFailed    = 8 // no instance could be started (message says why)
)

var errBadFrame = errors.New("malformed sandbox frame")

type encoder struct{ b []byte }

func (e *encoder) uint(v uint64)   { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) bytes(p []byte)  { e.uint(uint64(len(p))); e.b = append(e.b, p...) }
func (e *encoder) string(s string) { e.uint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) strings(s []string) {
	e.uint(uint64(len(s)))
	for _, x := range s {
		e.string(x)
	}
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errBadFrame
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes returns a sub-slice of the frame (not a copy).
func (d *decoder) bytes() []byte {
	n := d.uint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errBadFrame
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) string() string { return string(d.bytes()) }

// strings reads a list of at most max strings.
func (d *decoder) strings(max int) []string {
	n := d.uint()
	if d.err != nil {
		return nil
	}
	if n > uint64(max) || n > uint64(len(d.b)) {
		d.err = errBadFrame
		return nil
	}
	out := make([]string, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		out = append(out, d.string())
	}
	return out
}

// writeFrame writes one frame in a single Write call (pipes keep writes of
// up to PIPE_BUF atomic; larger ones are serialised by the caller's lock).
func writeFrame(w io.Writer, typ byte, payload []byte) error {
	buf := make([]byte, 5, 5+len(payload))
	binary.BigEndian.PutUint32(buf, uint32(1+len(payload)))
	buf[4] = typ
	_, err := w.Write(append(buf, payload...))
	return err
}

// readFrame reads one frame of at most max bytes.
func readFrame(r *bufio.Reader, max int) (byte, []byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || uint64(n) > uint64(max) {
		return 0, nil, fmt.Errorf("%w: frame of %d bytes, the limit is %d", errBadFrame, n, max)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, err
	}
	return buf[0], buf[1:], nil
}

// callRequest is a frameCall.
type callRequest struct {
	id      uint64
	timeout time.Duration
	hook    string
	input   []byte
}

func (c *callRequest) encode() []byte {
	var e encoder
	e.b = make([]byte, 0, 32+len(c.hook)+len(c.input))
	e.uint(c.id)
	e.uint(uint64(c.timeout))
	e.string(c.hook)
	e.bytes(c.input)
	return e.b
}

func decodeCallRequest(p []byte) (*callRequest, error) {
	d := decoder{b: p}
	c := &callRequest{id: d.uint(), timeout: time.Duration(d.uint()), hook: d.string(), input: d.bytes()}
	return c, d.err
}

// callResult is a frameResult (and, without id and output, a frameLoaded or
// frameCompiled).
type callResult struct {
	id       uint64
	status   uint64
	message  string
	output   []byte
	logs     []string
	duration time.Duration
}

func (c *callResult) encode() []byte {
	var e encoder
	e.uint(c.id)
	e.uint(c.status)
	e.string(c.message)
	e.bytes(c.output)
	e.strings(c.logs)
	e.uint(uint64(c.duration))
	return e.b
}

func decodeCallResult(p []byte, maxLogLines int) (*callResult, error) {
	d := decoder{b: p}
	c := &callResult{id: d.uint(), status: d.uint(), message: d.string(), output: d.bytes(), logs: d.strings(maxLogLines),
		duration: time.Duration(d.uint())}
	if d.err == nil && len(c.message) > 64<<10 {
		d.err = errBadFrame
	}
	return c, d.err
}
