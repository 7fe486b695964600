(module
  (memory (export "memory") 1)
  ;; out[r] = init[r] + W[r, :] . x for a row-major (rows x cols) f32 matrix; byte offsets; f32x4 lanes
  ;; accumulate columns c, c+4, ... and the tail columns (cols % 4) add one at a time.
  (func (export "matvec") (param $w i32) (param $rows i32) (param $cols i32) (param $x i32) (param $init i32) (param $out i32)
    (local $r i32) (local $c i32) (local $row i32) (local $acc v128) (local $s f32) (local $vec_end i32)
    (local.set $vec_end (i32.and (local.get $cols) (i32.const -4)))
    (block $done_rows
      (loop $rows_loop
        (br_if $done_rows (i32.ge_u (local.get $r) (local.get $rows)))
        (local.set $acc (v128.const f32x4 0 0 0 0))
        (local.set $c (i32.const 0))
        (block $done_vec
          (loop $vec
            (br_if $done_vec (i32.ge_u (local.get $c) (local.get $vec_end)))
            (local.set $acc (f32x4.add (local.get $acc)
              (f32x4.mul (v128.load (i32.add (local.get $w) (i32.shl (local.get $c) (i32.const 2))))
                         (v128.load (i32.add (local.get $x) (i32.shl (local.get $c) (i32.const 2)))))))
            (local.set $c (i32.add (local.get $c) (i32.const 4)))
            (br $vec)))
        (local.set $s (f32.add
          (f32.add (f32x4.extract_lane 0 (local.get $acc)) (f32x4.extract_lane 1 (local.get $acc)))
          (f32.add (f32x4.extract_lane 2 (local.get $acc)) (f32x4.extract_lane 3 (local.get $acc)))))
        (block $done_tail
          (loop $tail
            (br_if $done_tail (i32.ge_u (local.get $c) (local.get $cols)))
            (local.set $s (f32.add (local.get $s)
              (f32.mul (f32.load (i32.add (local.get $w) (i32.shl (local.get $c) (i32.const 2))))
                       (f32.load (i32.add (local.get $x) (i32.shl (local.get $c) (i32.const 2)))))))
            (local.set $c (i32.add (local.get $c) (i32.const 1)))
            (br $tail)))
        (f32.store (i32.add (local.get $out) (i32.shl (local.get $r) (i32.const 2)))
          (f32.add (f32.load (i32.add (local.get $init) (i32.shl (local.get $r) (i32.const 2)))) (local.get $s)))
        (local.set $w (i32.add (local.get $w) (i32.shl (local.get $cols) (i32.const 2))))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rows_loop))))
)
