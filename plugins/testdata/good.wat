;; good.wat: a well-behaved plugin that allows everything and echoes nothing.
;; The hostile-plugin suite runs it for another tenant while hostile modules
;; misbehave, to show they are contained.
(module
  (memory (export "memory") 1 2)
  (data (i32.const 16) "{\"allow\":true}")
  (func (export "pm_alloc") (param $size i32) (result i32)
    (if (i32.gt_u (local.get $size) (i32.const 60000)) (then (unreachable)))
    (i32.const 1024))
  (func (export "pm_handle") (param i32 i32 i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 14))))
