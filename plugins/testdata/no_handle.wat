;; Lacks the pm_handle export.
(module
  (memory (export "memory") 1)
  (func (export "pm_alloc") (param i32) (result i32) (i32.const 1024)))
