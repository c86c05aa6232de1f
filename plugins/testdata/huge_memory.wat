;; Declares a minimum of 1024 pages (64 MiB), over the default cap of 256.
(module
  (memory (export "memory") 1024)
  (func (export "pm_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "pm_handle") (param i32 i32 i32 i32) (result i64) (i64.const 0)))
