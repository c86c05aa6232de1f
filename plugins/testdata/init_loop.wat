;; Its _initialize never returns: refused at load once the init deadline passes.
(module
  (memory (export "memory") 1)
  (func (export "_initialize") (loop $forever (br $forever)))
  (func (export "pm_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "pm_handle") (param i32 i32 i32 i32) (result i64) (i64.const 0)))
