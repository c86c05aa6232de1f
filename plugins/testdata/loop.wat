;; loop.wat: a validation plugin that never answers (spins until the host
;; stops it at its deadline). Used by the failure-policy and noisy-neighbour
;; end-to-end tests in cmd/promanage/plugins_test.go.
(module
  (memory (export "memory") 4 4)
  (func (export "pm_alloc") (param $size i32) (result i32) (i32.const 1024))
  (func (export "pm_handle") (param $hp i32) (param $hl i32) (param $ip i32) (param $il i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0)))
