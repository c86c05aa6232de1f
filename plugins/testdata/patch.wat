;; patch.wat: allows every change and normalises it with a JSON merge patch
;; (RFC 7396) that sets the description, to show that validation plugins may
;; patch their input (the platform applies the patch and validates again).
(module
  (memory (export "memory") 1 2)
  (data (i32.const 16) "{\"allow\":true,\"patch\":{\"description\":\"Reviewed by the patch plugin\"}}")
  (func (export "pm_alloc") (param $size i32) (result i32)
    (if (i32.gt_u (local.get $size) (i32.const 60000)) (then (unreachable)))
    (i32.const 1024))
  (func (export "pm_handle") (param i32 i32 i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 69))))
