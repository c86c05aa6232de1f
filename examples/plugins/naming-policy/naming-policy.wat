;; naming-policy: a ProManage validation plugin written directly in WebAssembly
;; text format, to show that the plugin ABI (plugins/ABI.md) needs no SDK.
;;
;; On project.validate it reads input.key from the JSON input and rejects the
;; change unless the key is 2 to 10 characters, an uppercase ASCII letter
;; followed by uppercase letters or digits (^[A-Z][A-Z0-9]{1,9}$). Other hooks
;; and inputs without a key are allowed.
;;
;; ABI summary: the host calls pm_alloc(len) for the hook name and for the
;; input, copies them in, then pm_handle(hook_ptr, hook_len, in_ptr, in_len),
;; which returns (out_ptr << 32) | out_len of the JSON result. The result here
;; is always a constant in the data section, so the bump allocator can be reset
;; after every call.
;;
;; Build: wat2wasm naming-policy.wat -o naming-policy.wasm
(module
  (import "promanage" "log" (func $log (param i32 i32 i32)))

  (memory (export "memory") 1 16)

  ;; Constant strings (offsets fixed, lengths passed explicitly below).
  (data (i32.const 16) "input")
  (data (i32.const 32) "key")
  (data (i32.const 48) "project.validate")
  (data (i32.const 128) "{\"allow\":true}")
  (data (i32.const 256) "{\"allow\":false,\"message\":\"project key must be 2 to 10 characters: an uppercase letter (A-Z), then uppercase letters or digits\"}")
  (data (i32.const 512) "{\"error\":\"naming-policy: input has no \\\"input\\\" object\"}")
  (data (i32.const 640) "naming-policy: rejected a project key")

  (global $heap (mut i32) (i32.const 4096)) ;; next free byte for pm_alloc
  (global $end (mut i32) (i32.const 0))     ;; end of the input being parsed

  ;; pm_alloc: bump allocator, growing memory when needed.
  (func (export "pm_alloc") (param $size i32) (result i32)
    (local $ptr i32) (local $end i32)
    (local.set $ptr (global.get $heap))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.sub
                  (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16))
                  (memory.size)))
              (i32.const -1))
          (then (unreachable)))))
    (global.set $heap (i32.and (i32.add (local.get $end) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))

  (func (export "pm_handle") (param $hp i32) (param $hl i32) (param $ip i32) (param $il i32) (result i64)
    (local $res i64)
    (global.set $end (i32.add (local.get $ip) (local.get $il)))
    (local.set $res (call $check (local.get $hp) (local.get $hl) (local.get $ip)))
    (global.set $heap (i32.const 4096)) ;; inputs are no longer needed
    (local.get $res))

  (func $result (param $ptr i32) (param $len i32) (result i64)
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len))))

  (func $allow (result i64) (call $result (i32.const 128) (i32.const 14)))

  (func $reject (result i64)
    (call $log (i32.const 1) (i32.const 640) (i32.const 37))
    (call $result (i32.const 256) (i32.const 127)))

  (func $check (param $hp i32) (param $hl i32) (param $ip i32) (result i64)
    (local $p i32) (local $c i32) (local $n i32)
    (if (i32.eqz (call $eq (local.get $hp) (local.get $hl) (i32.const 48) (i32.const 16)))
      (then (return (call $allow))))
    (local.set $p (call $member (call $ws (local.get $ip)) (i32.const 16) (i32.const 5)))
    (if (i32.lt_s (local.get $p) (i32.const 0))
      (then (return (call $result (i32.const 512) (i32.const 56)))))
    (local.set $p (call $member (local.get $p) (i32.const 32) (i32.const 3)))
    (if (i32.lt_s (local.get $p) (i32.const 0))
      (then (return (call $allow)))) ;; no key in this change
    (if (i32.ne (call $at (local.get $p)) (i32.const 34)) ;; not a string
      (then (return (call $reject))))
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (if (i32.eqz (call $upper (call $at (local.get $p))))
      (then (return (call $reject))))
    (local.set $n (i32.const 1))
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (loop $next
      (local.set $c (call $at (local.get $p)))
      (if (i32.eq (local.get $c) (i32.const 34)) ;; closing quote
        (then
          (if (i32.ge_u (local.get $n) (i32.const 2)) (then (return (call $allow))))
          (return (call $reject))))
      (if (i32.eqz (i32.or (call $upper (local.get $c)) (call $digit (local.get $c))))
        (then (return (call $reject)))) ;; also escapes and the end of input
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (if (i32.gt_u (local.get $n) (i32.const 10)) (then (return (call $reject))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $next))
    (call $reject))

  (func $upper (param $c i32) (result i32)
    (i32.and (i32.ge_s (local.get $c) (i32.const 65)) (i32.le_s (local.get $c) (i32.const 90))))

  (func $digit (param $c i32) (result i32)
    (i32.and (i32.ge_s (local.get $c) (i32.const 48)) (i32.le_s (local.get $c) (i32.const 57))))

  ;; $at: the input byte at $p, or -1 past the end.
  (func $at (param $p i32) (result i32)
    (if (result i32) (i32.lt_u (local.get $p) (global.get $end))
      (then (i32.load8_u (local.get $p)))
      (else (i32.const -1))))

  (func $space (param $c i32) (result i32)
    (i32.or
      (i32.or (i32.eq (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 9)))
      (i32.or (i32.eq (local.get $c) (i32.const 10)) (i32.eq (local.get $c) (i32.const 13)))))

  ;; $ws: skip JSON whitespace.
  (func $ws (param $p i32) (result i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (call $space (call $at (local.get $p)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $p))

  ;; $eq: byte-wise equality of two ranges.
  (func $eq (param $a i32) (param $alen i32) (param $b i32) (param $blen i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $alen) (local.get $blen)) (then (return (i32.const 0))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $alen)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  ;; $skip_string: $p at an opening quote; returns the position after the
  ;; closing quote, or -1.
  (func $skip_string (param $p i32) (result i32)
    (local $c i32)
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (loop $next
      (local.set $c (call $at (local.get $p)))
      (if (i32.eq (local.get $c) (i32.const -1)) (then (return (i32.const -1))))
      (if (i32.eq (local.get $c) (i32.const 34)) (then (return (i32.add (local.get $p) (i32.const 1)))))
      (if (i32.eq (local.get $c) (i32.const 92)) ;; backslash: skip the escaped byte
        (then (local.set $p (i32.add (local.get $p) (i32.const 1)))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $next))
    (i32.const -1))

  ;; $skip_value: $p at the first byte of a JSON value; returns the position
  ;; after it, or -1.
  (func $skip_value (param $p i32) (result i32)
    (local $c i32) (local $depth i32)
    (local.set $c (call $at (local.get $p)))
    (if (i32.eq (local.get $c) (i32.const 34)) (then (return (call $skip_string (local.get $p)))))
    (if (i32.or (i32.eq (local.get $c) (i32.const 123)) (i32.eq (local.get $c) (i32.const 91)))
      (then
        (loop $next
          (local.set $c (call $at (local.get $p)))
          (if (i32.eq (local.get $c) (i32.const -1)) (then (return (i32.const -1))))
          (if (i32.eq (local.get $c) (i32.const 34))
            (then
              (local.set $p (call $skip_string (local.get $p)))
              (if (i32.lt_s (local.get $p) (i32.const 0)) (then (return (i32.const -1))))
              (br $next)))
          (if (i32.or (i32.eq (local.get $c) (i32.const 123)) (i32.eq (local.get $c) (i32.const 91)))
            (then (local.set $depth (i32.add (local.get $depth) (i32.const 1)))))
          (if (i32.or (i32.eq (local.get $c) (i32.const 125)) (i32.eq (local.get $c) (i32.const 93)))
            (then
              (local.set $depth (i32.sub (local.get $depth) (i32.const 1)))
              (if (i32.eqz (local.get $depth)) (then (return (i32.add (local.get $p) (i32.const 1)))))))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (br $next))))
    ;; number, true, false, null: up to a delimiter
    (loop $scalar
      (local.set $c (call $at (local.get $p)))
      (if (i32.or (i32.or (i32.eq (local.get $c) (i32.const -1)) (i32.eq (local.get $c) (i32.const 44)))
                  (i32.or (i32.eq (local.get $c) (i32.const 125)) (i32.eq (local.get $c) (i32.const 93))))
        (then (return (local.get $p))))
      (if (call $space (local.get $c)) (then (return (local.get $p))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $scalar))
    (i32.const -1))

  ;; $member: $p at the '{' of an object; returns the position of the value
  ;; of the member named by ($name, $nlen), or -1. Names are compared as raw
  ;; bytes (no escape decoding), which suffices for ASCII member names.
  (func $member (param $p i32) (param $name i32) (param $nlen i32) (result i32)
    (local $ks i32) (local $ke i32)
    (if (i32.ne (call $at (local.get $p)) (i32.const 123)) (then (return (i32.const -1))))
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (loop $next
      (local.set $p (call $ws (local.get $p)))
      (if (i32.ne (call $at (local.get $p)) (i32.const 34)) (then (return (i32.const -1)))) ;; '}' or garbage
      (local.set $ks (i32.add (local.get $p) (i32.const 1)))
      (local.set $p (call $skip_string (local.get $p)))
      (if (i32.lt_s (local.get $p) (i32.const 0)) (then (return (i32.const -1))))
      (local.set $ke (i32.sub (local.get $p) (i32.const 1)))
      (local.set $p (call $ws (local.get $p)))
      (if (i32.ne (call $at (local.get $p)) (i32.const 58)) (then (return (i32.const -1))))
      (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1))))
      (if (call $eq (local.get $ks) (i32.sub (local.get $ke) (local.get $ks)) (local.get $name) (local.get $nlen))
        (then (return (local.get $p))))
      (local.set $p (call $skip_value (local.get $p)))
      (if (i32.lt_s (local.get $p) (i32.const 0)) (then (return (i32.const -1))))
      (local.set $p (call $ws (local.get $p)))
      (if (i32.ne (call $at (local.get $p)) (i32.const 44)) (then (return (i32.const -1))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $next))
    (i32.const -1))
)
