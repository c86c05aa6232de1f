;; hostile.wat: one module, many misbehaviours, chosen by the second byte of
;; the input (the tests send a JSON string such as "loop"). Used by the
;; hostile-plugin suite in plugins/hostile_test.go.
;;   "ok"      {"allow":true} and a log line
;;   "loop"    spins forever                       -> ErrTimeout
;;   "grow"    grows memory until refused, traps   -> ErrMemoryLimit
;;   "recurse" unbounded recursion                 -> ErrTrap (stack overflow)
;;   "bigout"  claims a 1 MiB output               -> ErrOutputTooLarge
;;   "xbounds" output range outside memory         -> ErrTrap
;;   "trap"    unreachable                         -> ErrTrap
;;   "exit"    WASI proc_exit(3)                   -> ErrTrap
;;   "slow"    busy for a while, then allows
;;   "flood"   logs 100000 lines, then allows      -> logs truncated
;;   "junk"    output that is not JSON             -> ErrInvalidOutput
;;   "mutate"  allows, but the first call poisons a global that makes later
;;             calls on the same instance trap (shows instance reuse)
(module
  (import "promanage" "log" (func $log (param i32 i32 i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "{\"allow\":true}")       ;; 14 bytes
  (data (i32.const 64) "hostile: ok")            ;; 11 bytes
  (data (i32.const 96) "not json at all")        ;; 15 bytes
  (data (i32.const 128) "flood flood flood flood flood flood flood flood flood flood") ;; 59 bytes
  (global $heap (mut i32) (i32.const 1024))
  (global $poisoned (mut i32) (i32.const 0))

  (func (export "pm_alloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (if (i32.eq (memory.grow (i32.const 4)) (i32.const -1)) (then (unreachable)))))
    (local.get $ptr))

  (func $allow (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 14)))

  (func $recurse (param $n i32) (result i32)
    (i32.add (call $recurse (i32.add (local.get $n) (i32.const 1))) (i32.const 1)))

  (func (export "pm_handle") (param $hp i32) (param $hl i32) (param $ip i32) (param $il i32) (result i64)
    (local $mode i32) (local $i i32)
    (global.set $heap (i32.const 1024))
    (if (global.get $poisoned) (then (unreachable)))
    (local.set $mode (i32.load8_u (i32.add (local.get $ip) (i32.const 1))))
    ;; "ok"
    (if (i32.eq (local.get $mode) (i32.const 111))
      (then
        (call $log (i32.const 1) (i32.const 64) (i32.const 11))
        (return (call $allow))))
    ;; "loop"
    (if (i32.eq (local.get $mode) (i32.const 108))
      (then (loop $forever (br $forever))))
    ;; "grow"
    (if (i32.eq (local.get $mode) (i32.const 103))
      (then
        (loop $more
          (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
        (unreachable)))
    ;; "recurse"
    (if (i32.eq (local.get $mode) (i32.const 114))
      (then (drop (call $recurse (i32.const 0)))))
    ;; "bigout"
    (if (i32.eq (local.get $mode) (i32.const 98))
      (then (return (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 1048576)))))
    ;; "xbounds"
    (if (i32.eq (local.get $mode) (i32.const 120))
      (then (return (i64.or (i64.shl (i64.const 0x7fff0000) (i64.const 32)) (i64.const 100)))))
    ;; "trap"
    (if (i32.eq (local.get $mode) (i32.const 116))
      (then (unreachable)))
    ;; "exit"
    (if (i32.eq (local.get $mode) (i32.const 101))
      (then (call $proc_exit (i32.const 3))))
    ;; "slow": about 200k iterations (~6 ms; much more under the race detector) of a dependent loop
    (if (i32.eq (local.get $mode) (i32.const 115))
      (then
        (local.set $i (i32.const 200000))
        (loop $spin
          (local.set $i (i32.sub (local.get $i) (i32.const 1)))
          (br_if $spin (i32.gt_s (local.get $i) (i32.const 0))))
        (return (call $allow))))
    ;; "flood"
    (if (i32.eq (local.get $mode) (i32.const 102))
      (then
        (local.set $i (i32.const 100000))
        (loop $more
          (call $log (i32.const 2) (i32.const 128) (i32.const 59))
          (local.set $i (i32.sub (local.get $i) (i32.const 1)))
          (br_if $more (i32.gt_s (local.get $i) (i32.const 0))))
        (return (call $allow))))
    ;; "junk"
    (if (i32.eq (local.get $mode) (i32.const 106))
      (then (return (i64.or (i64.shl (i64.const 96) (i64.const 32)) (i64.const 15)))))
    ;; "mutate"
    (if (i32.eq (local.get $mode) (i32.const 109))
      (then (global.set $poisoned (i32.const 1)) (return (call $allow))))
    (unreachable))
)
