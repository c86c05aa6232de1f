;; notify.wat: a notification plugin that always asks for one delivery, and
;; logs the input it was given (used by the RunLocal tests).
(module
  (import "promanage" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1 4)
  (data (i32.const 16) "{\"deliveries\":[{\"url\":\"https://hooks.example.com/pm\",\"body\":{\"ok\":true}}]}")
  (global $heap (mut i32) (i32.const 1024))
  (func (export "pm_alloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (if (i32.eq (memory.grow (i32.const 3)) (i32.const -1)) (then (unreachable)))))
    (local.get $ptr))
  (func (export "pm_handle") (param $hp i32) (param $hl i32) (param $ip i32) (param $il i32) (result i64)
    (call $log (i32.const 0) (local.get $ip) (local.get $il))
    (global.set $heap (i32.const 1024))
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 74))))
