//! Carrying out a [`Plan`] in a stage's store (the core instances made in the component's
//! order, every host function lowered with its options), and the calls the host makes into the
//! result: `resume`, `close`, `snapshot` and `restore`, lifted by hand (`abi.rs`), their
//! post-return functions run with imports refused, as wasmtime runs them.

use std::collections::HashMap;

use wasmtime::{Extern, Func, Memory, Store, TypedFunc};

use super::abi::{self, Options, Realloc};
use super::shape::{Alias, CoreFunc, Item, Lift, Plan, Step};
use crate::chunk::{Answered, Chunk, Deliver, Lent};
use crate::error::Result;
use crate::sandbox::StageCtx;

/// A core instance, or a bag of core items made to be an instantiation argument.
enum Made {
    Instance(wasmtime::Instance),
    Bag(HashMap<String, Extern>),
}

/// What carrying out a plan has made so far.
struct Built {
    instances: Vec<Made>,
    funcs: Vec<Option<Func>>,
}

/// A lifted export returning a value through a return pointer in `memory`.
struct Returning<P: wasmtime::WasmParams> {
    func: TypedFunc<P, u32>,
    memory: Memory,
    post_return: Option<TypedFunc<u32, ()>>,
}

/// The stage's exports, ready to call.
pub(crate) struct CoreCalls {
    resume: Returning<u32>,
    close: TypedFunc<(), ()>,
    close_post_return: Option<TypedFunc<(), ()>>,
    state: Option<State>,
}

/// The optional `state` interface.
struct State {
    snapshot: Returning<()>,
    restore: Returning<(u32, u32)>,
    restore_options: Options,
}

impl Plan {
    /// Makes the stage's core instances in `store` (start functions run) and finds its exports.
    pub(crate) fn instantiate(&self, store: &mut Store<StageCtx>) -> wasmtime::Result<CoreCalls> {
        store.data_mut().lowerings = self.host.no_lowerings();
        let mut built = Built {
            instances: Vec::with_capacity(self.steps.len()),
            funcs: vec![None; self.funcs.len()],
        };
        for step in &self.steps {
            let made = match step {
                Step::Instantiate { module, args } => {
                    let module = self
                        .modules
                        .get(*module as usize)
                        .ok_or_else(|| wasmtime::format_err!("no module {module}"))?;
                    let mut imports = Vec::new();
                    for import in module.imports() {
                        let instance = args
                            .iter()
                            .find(|(name, _)| name == import.module())
                            .map(|(_, instance)| *instance)
                            .ok_or_else(|| {
                                wasmtime::format_err!("no instance given as `{}`", import.module())
                            })?;
                        imports.push(export(&built, store, instance, import.name())?);
                    }
                    Made::Instance(wasmtime::Instance::new(&mut *store, module, &imports)?)
                }
                Step::Bag(items) => {
                    let mut bag = HashMap::with_capacity(items.len());
                    for (name, item) in items {
                        let item = match *item {
                            Item::Func(i) => Extern::Func(self.func(&mut built, store, i)?),
                            Item::Memory(i) => Extern::Memory(self.memory(&built, store, i)?),
                            Item::Table(i) => aliased(&built, store, &self.tables, i)?,
                            Item::Global(i) => aliased(&built, store, &self.globals, i)?,
                        };
                        bag.insert(name.clone(), item);
                    }
                    Made::Bag(bag)
                }
            };
            built.instances.push(made);
        }
        let exports = &self.exports;
        let close = self
            .func(&mut built, store, exports.close.func)?
            .typed(&*store)?;
        let close_post_return = match exports.close.post_return {
            Some(f) => Some(self.func(&mut built, store, f)?.typed(&*store)?),
            None => None,
        };
        let state = match exports.state {
            None => None,
            Some((snapshot, restore)) => Some(State {
                snapshot: self.returning(&mut built, store, snapshot)?,
                restore_options: self.options(&mut built, store, restore)?,
                restore: self.returning(&mut built, store, restore)?,
            }),
        };
        Ok(CoreCalls {
            resume: self.returning(&mut built, store, exports.resume)?,
            close,
            close_post_return,
            state,
        })
    }

    fn returning<P: wasmtime::WasmParams>(
        &self,
        built: &mut Built,
        store: &mut Store<StageCtx>,
        lift: Lift,
    ) -> wasmtime::Result<Returning<P>> {
        Ok(Returning {
            func: self.func(built, store, lift.func)?.typed(&*store)?,
            memory: self.options(built, store, lift)?.memory,
            post_return: match lift.post_return {
                Some(f) => Some(self.func(built, store, f)?.typed(&*store)?),
                None => None,
            },
        })
    }

    fn options(
        &self,
        built: &mut Built,
        store: &mut Store<StageCtx>,
        lift: Lift,
    ) -> wasmtime::Result<Options> {
        let memory = lift
            .memory
            .ok_or_else(|| wasmtime::format_err!("an export is lifted without a memory"))?;
        Ok(Options {
            memory: self.memory(built, store, memory)?,
            realloc: match lift.realloc {
                Some(f) => Some(self.func(built, store, f)?.typed::<_, _>(&*store)?),
                None => None,
            },
        })
    }

    /// Core function `index`, made (a host function) or found (an export) once.
    fn func(
        &self,
        built: &mut Built,
        store: &mut Store<StageCtx>,
        index: u32,
    ) -> wasmtime::Result<Func> {
        if let Some(Some(func)) = built.funcs.get(index as usize) {
            return Ok(*func);
        }
        let func = match self.funcs.get(index as usize) {
            Some(CoreFunc::Export(alias)) => export_of(built, store, alias)?
                .into_func()
                .ok_or_else(|| wasmtime::format_err!("`{}` is not a function", alias.name))?,
            Some(CoreFunc::Host {
                import: _,
                memory,
                realloc,
            }) => {
                let options = match memory {
                    Some(memory) => Some(Options {
                        memory: self.memory(built, store, *memory)?,
                        realloc: match realloc {
                            Some(f) => {
                                let realloc: Realloc =
                                    self.func(built, store, *f)?.typed(&*store)?;
                                Some(realloc)
                            }
                            None => None,
                        },
                    }),
                    None => None,
                };
                self.host.get(store, index, options)?
            }
            None => wasmtime::bail!("no core function {index}"),
        };
        if let Some(slot) = built.funcs.get_mut(index as usize) {
            *slot = Some(func);
        }
        Ok(func)
    }

    fn memory(
        &self,
        built: &Built,
        store: &mut Store<StageCtx>,
        index: u32,
    ) -> wasmtime::Result<Memory> {
        aliased(built, store, &self.memories, index)?
            .into_memory()
            .ok_or_else(|| wasmtime::format_err!("core memory {index} is not a memory"))
    }
}

/// Item `index` of an index space of aliases.
fn aliased(
    built: &Built,
    store: &mut Store<StageCtx>,
    space: &[Alias],
    index: u32,
) -> wasmtime::Result<Extern> {
    let alias = space
        .get(index as usize)
        .ok_or_else(|| wasmtime::format_err!("no core item {index}"))?;
    export_of(built, store, alias)
}

fn export_of(
    built: &Built,
    store: &mut Store<StageCtx>,
    alias: &Alias,
) -> wasmtime::Result<Extern> {
    export(built, store, alias.instance, &alias.name)
}

/// Export `name` of core instance `instance`.
fn export(
    built: &Built,
    store: &mut Store<StageCtx>,
    instance: u32,
    name: &str,
) -> wasmtime::Result<Extern> {
    match built.instances.get(instance as usize) {
        Some(Made::Instance(made)) => made.get_export(&mut *store, name),
        Some(Made::Bag(bag)) => bag.get(name).cloned(),
        None => None,
    }
    .ok_or_else(|| wasmtime::format_err!("core instance {instance} has no `{name}`"))
}

impl CoreCalls {
    /// `resume(credits) -> option<chunk>`, the answer checked by `check` where it lies in the
    /// guest's memory, then handed to `deliver` from there (one copy, into the puller) if the
    /// call went cleanly so far, else lifted for the caller (whose call then fails, or who
    /// delivers it); then the post-return. The outer result is the call's, the inner the
    /// check's. The time the delivery takes (the puller's realloc and the copy) is not this
    /// stage's: it is charged as time spent outside it, as a pull's is.
    ///
    /// The delivery happens before the post-return: if that then traps, the stage faults,
    /// and after a restart the retried call delivers again. The puller keeps only the last
    /// delivery (`fast/stage_calls.rs`); what an earlier one allocated in its memory stays
    /// unused there (one chunk per such fault, which the fault policy bounds).
    pub(crate) fn resume_with<T>(
        &self,
        store: &mut Store<StageCtx>,
        credits: u32,
        check: impl FnOnce(&[u8]) -> Result<u32>,
        deliver: Option<Deliver<'_, T>>,
    ) -> wasmtime::Result<Result<Option<Answered<T>>>> {
        let ret = self.resume.func.call(&mut *store, credits)?;
        let clean = store.data().call_is_clean();
        let memory = self.resume.memory.data(&*store);
        let mut delivery_began = None;
        let answer = match option_list(memory, ret)? {
            None => Ok(None),
            Some(bytes) => check(bytes).map(|records| {
                Some(match deliver {
                    Some(deliver) if clean => {
                        delivery_began = Some(store.data().budget.ticks());
                        Answered::Delivered {
                            value: deliver(Lent::Borrowed(bytes), records),
                            records,
                            bytes: bytes.len(),
                        }
                    }
                    _ => Answered::Lifted(Chunk::from_checked(
                        Lent::Borrowed(bytes).into_vec(),
                        records,
                    )),
                })
            }),
        };
        if let Some(began) = delivery_began {
            store.data_mut().budget.charge_upstream(began);
        }
        post_return(store, self.resume.post_return.as_ref(), ret)?;
        Ok(answer)
    }

    /// `close()`.
    pub(crate) fn close(&self, store: &mut Store<StageCtx>) -> wasmtime::Result<()> {
        self.close.call(&mut *store, ())?;
        if let Some(post) = &self.close_post_return {
            store.data_mut().may_leave = false;
            post.call(&mut *store, ())?;
            store.data_mut().may_leave = true;
        }
        Ok(())
    }

    /// True if the stage exports the `state` interface.
    pub(crate) fn has_state(&self) -> bool {
        self.state.is_some()
    }

    /// `snapshot() -> option<list<u8>>`; `Ok(None)` without the `state` interface.
    pub(crate) fn snapshot(
        &self,
        store: &mut Store<StageCtx>,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        let Some(state) = &self.state else {
            return Ok(None);
        };
        let ret = state.snapshot.func.call(&mut *store, ())?;
        let answer = lift_option_list(state.snapshot.memory.data(&*store), ret)?;
        post_return(store, state.snapshot.post_return.as_ref(), ret)?;
        Ok(answer)
    }

    /// `restore(state) -> result<_, string>`: the state copied in through the guest's
    /// realloc, the answer lifted, then the post-return.
    pub(crate) fn restore(
        &self,
        store: &mut Store<StageCtx>,
        bytes: &[u8],
    ) -> wasmtime::Result<Result<(), String>> {
        let Some(state) = &self.state else {
            return Ok(Ok(()));
        };
        let (ptr, len) = abi::lower_bytes(&mut *store, &state.restore_options, bytes)?;
        let ret = state.restore.func.call(&mut *store, (ptr, len))?;
        let memory = state.restore.memory.data(&*store);
        let area = abi::results(memory, ret, 4, 12)?;
        let answer = match area.first() {
            Some(0) => Ok(()),
            Some(1) => {
                Err(abi::string(memory, abi::u32_at(area, 4)?, abi::u32_at(area, 8)?)?.to_string())
            }
            _ => wasmtime::bail!("invalid expected discriminant"),
        };
        post_return(store, state.restore.post_return.as_ref(), ret)?;
        Ok(answer)
    }
}

/// Lifts an `option<list<u8>>` returned through `ret` (tag at 0, pointer at 4, length at 8).
fn lift_option_list(memory: &[u8], ret: u32) -> wasmtime::Result<Option<Vec<u8>>> {
    Ok(option_list(memory, ret)?.map(|list| Lent::Borrowed(list).into_vec()))
}

/// The bytes of an `option<list<u8>>` returned through `ret`, where they lie in `memory`.
fn option_list(memory: &[u8], ret: u32) -> wasmtime::Result<Option<&[u8]>> {
    let area = abi::results(memory, ret, 4, 12)?;
    match area.first() {
        Some(0) => Ok(None),
        Some(1) => Ok(Some(abi::list(
            memory,
            abi::u32_at(area, 4)?,
            abi::u32_at(area, 8)?,
        )?)),
        _ => wasmtime::bail!("invalid option discriminant"),
    }
}

/// Runs a post-return function with imports refused.
fn post_return(
    store: &mut Store<StageCtx>,
    post: Option<&TypedFunc<u32, ()>>,
    ret: u32,
) -> wasmtime::Result<()> {
    if let Some(post) = post {
        store.data_mut().may_leave = false;
        post.call(&mut *store, ret)?;
        store.data_mut().may_leave = true;
    }
    Ok(())
}
