;; A complete sluicegate stage in hand-written WAT: a pass-through. It shows the canonical ABI
;; of the contract with nothing hidden: how `upstream.pull` is lowered (credits in, a pointer
;; to an `option<list<u8>>` written into our memory), how `generator.resume` is lifted (we
;; return a pointer to our answer), and why a stage needs `realloc` (the host copies the
;; pulled chunk into memory we hand it). The chunk is already framed (u32 LE length before
;; each record), so forwarding it unchanged keeps every rule: at most `credits` records,
;; since upstream was asked for exactly `credits`.
(component
  ;; What we import: upstream.pull(credits: u32) -> option<chunk>.
  (import "sluicegate:stage/upstream@0.1.0" (instance $upstream
    (export "pull" (func (param "credits" u32) (result (option (list u8)))))))

  ;; Memory and a bump allocator. Everything a call allocates is dead once the host has
  ;; copied our answer out, so `resume` starts the heap afresh each time.
  (core module $memory
    (memory (export "memory") 1)
    (global $heap (export "heap") (mut i32) (i32.const 1024))
    (func (export "realloc") (param $old i32) (param $old_size i32) (param $align i32)
          (param $size i32) (result i32)
      (local $at i32)
      ;; align up, hand out, bump
      (local.set $at
        (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                 (i32.sub (i32.const 0) (local.get $align))))
      (global.set $heap (i32.add (local.get $at) (local.get $size)))
      ;; grow memory if the new end is past it (64 KiB pages)
      (block $fits
        (br_if $fits (i32.le_u (global.get $heap)
                               (i32.mul (memory.size) (i32.const 65536))))
        (drop (memory.grow
          (i32.add (i32.div_u (i32.sub (global.get $heap)
                                       (i32.mul (memory.size) (i32.const 65536)))
                              (i32.const 65536))
                   (i32.const 1)))))
      (local.get $at)))
  (core instance $mem (instantiate $memory))

  ;; pull, lowered: (credits, pointer where the host writes the answer) -> ().
  (core func $pull (canon lower (func $upstream "pull")
    (memory (core memory $mem "memory")) (realloc (core func $mem "realloc"))))

  (core module $stage
    (import "upstream" "pull" (func $pull (param i32 i32)))
    (import "mem" "memory" (memory 1))
    (import "mem" "heap" (global $heap (mut i32)))
    ;; resume(credits) -> pointer to option<list<u8>>: [tag: u32][ptr: u32][len: u32].
    (func (export "resume") (param $credits i32) (result i32)
      (global.set $heap (i32.const 1024))
      ;; The answer lives at 16. Priming and pauses: pull(0) (a pause reaches upstream),
      ;; and answer some(empty) -- unless upstream says it is finished.
      ;; Otherwise: pull `credits` records and forward the answer as it is.
      (call $pull (local.get $credits) (i32.const 16))
      (i32.const 16))
    (func (export "close")))
  (core instance $s (instantiate $stage
    (with "upstream" (instance (export "pull" (func $pull))))
    (with "mem" (instance $mem))))

  ;; What we export: generator.resume and generator.close, lifted.
  (func $resume (param "credits" u32) (result (option (list u8)))
    (canon lift (core func $s "resume")
      (memory (core memory $mem "memory")) (realloc (core func $mem "realloc"))))
  (func $close (canon lift (core func $s "close")))
  (instance $generator (export "resume" (func $resume)) (export "close" (func $close)))
  (export "sluicegate:stage/generator@0.1.0" (instance $generator)))
