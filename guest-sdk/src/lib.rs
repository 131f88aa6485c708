//! Write a sluicegate stage in Rust without touching wit-bindgen.
//!
//! A stage is a generator: the host primes it, then resumes it with demand credits, and it
//! answers with at most that many records, pulling its own input from upstream. Implement
//! [`Map`] for a record-by-record stage (map, filter, flat-map), [`Stage`] for anything else,
//! and export it with one macro:
//!
//! ```ignore
//! use sluicegate_guest::{Batch, Config, Map};
//!
//! struct Upper;
//!
//! impl Map for Upper {
//!     fn init(_config: &Config) -> Result<Self, String> {
//!         Ok(Upper)
//!     }
//!     fn map(&mut self, record: &[u8], out: &mut Batch) {
//!         out.push(&record.to_ascii_uppercase());
//!     }
//! }
//!
//! sluicegate_guest::export_map!(Upper);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release` and a `cdylib` crate type; the
//! result is a component of the world `sluicegate:stage/stage@0.1.0`. The protocol's rules are
//! in `docs/protocol.md`; the SDK keeps them for you (priming, pauses, never more records than
//! credits: extra records wait for the next resume, none is dropped).
#![deny(missing_docs)]

// The generated bindings name this crate by path, from inside and outside alike.
extern crate self as sluicegate_guest;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "sluicegate:stage/stateful-stage",
        pub_export_macro: true,
        export_macro_name: "__export_stage_world",
        default_bindings_module: "sluicegate_guest::bindings",
        runtime_path: "sluicegate_guest::__wit_bindgen::rt",
        // Written by hand (`answer.rs`): its answer needs no post-return. (`skip` names a
        // function in every interface; no other is called `resume`.)
        skip: ["resume"],
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

mod answer;
mod batch;
mod driver;
mod host;
#[cfg(any(
    test,
    all(
        feature = "recycle",
        target_arch = "wasm32",
        not(target_feature = "atomics")
    )
))]
mod recycle;
mod stage;

/// Chunk buffers recycled instead of going through `malloc`/`free` on every hop (the
/// `recycle` feature, on by default; see `recycle.rs`).
#[cfg(all(
    feature = "recycle",
    target_arch = "wasm32",
    not(target_feature = "atomics")
))]
#[global_allocator]
static ALLOCATOR: recycle::Recycle = recycle::Recycle::new();

pub use crate::batch::{Batch, Input, Records};
pub use crate::host::{Config, Level, Upstream, log, log_with};
pub use crate::stage::{Flow, Map, RawStage, Stage};

#[doc(hidden)]
pub mod __rt {
    pub use crate::answer::{resume, settle};
    pub use crate::driver::{MapDriver, StageDriver};
}

/// Exports a [`RawStage`]: full control of the wire, no rule kept for you. For tests and for
/// stages that frame their own chunks.
#[macro_export]
macro_rules! export_raw {
    ($ty:ty) => {
        const _: () = {
            struct __SluicegateExport;
            ::std::thread_local! {
                static STAGE: ::core::cell::RefCell<$ty> =
                    ::core::cell::RefCell::new(<$ty as $crate::RawStage>::new());
            }
            // `resume` is exported by hand, without a post-return (the SDK's `answer.rs`).
            #[unsafe(export_name = "sluicegate:stage/generator@0.1.0#resume")]
            extern "C" fn __sluicegate_resume(credits: i32) -> *mut u8 {
                #[cfg(target_arch = "wasm32")]
                $crate::__wit_bindgen::rt::run_ctors_once();
                $crate::__rt::resume(&STAGE, credits as u32)
            }
            impl $crate::bindings::exports::sluicegate::stage::generator::Guest
                for __SluicegateExport
            {
                fn close() {
                    $crate::__rt::settle(&STAGE);
                    STAGE.with(|s| $crate::RawStage::close(&mut *s.borrow_mut()))
                }
            }
            impl $crate::bindings::exports::sluicegate::stage::state::Guest
                for __SluicegateExport
            {
                fn snapshot() -> ::core::option::Option<::std::vec::Vec<u8>> {
                    $crate::__rt::settle(&STAGE);
                    STAGE.with(|s| $crate::RawStage::snapshot(&*s.borrow()))
                }
                fn restore(state: ::std::vec::Vec<u8>) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__rt::settle(&STAGE);
                    STAGE.with(|s| $crate::RawStage::restore(&mut *s.borrow_mut(), &state))
                }
            }
            $crate::bindings::__export_stage_world!(__SluicegateExport);
        };
    };
}

/// Exports a [`Stage`] as this component's generator.
#[macro_export]
macro_rules! export_stage {
    ($ty:ty) => {
        $crate::export_raw!($crate::__rt::StageDriver<$ty>);
    };
}

/// Exports a [`Map`] (a record-by-record stage) as this component's generator.
#[macro_export]
macro_rules! export_map {
    ($ty:ty) => {
        $crate::export_raw!($crate::__rt::StageDriver<$crate::__rt::MapDriver<$ty>>);
    };
}
