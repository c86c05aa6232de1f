;; Imports a function from a module the host does not provide.
(module
  (import "env" "system" (func (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "pm_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "pm_handle") (param i32 i32 i32 i32) (result i64) (i64.const 0)))
