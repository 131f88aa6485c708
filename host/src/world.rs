//! What a component must export to be a stage, checked at load time. The generated bindings
//! only type-check exports when a component is instantiated; checking the shape here means a
//! mistyped stage is refused when it is loaded, with the name of the function at fault.

use wasmtime::component::Component;
use wasmtime::component::types::{ComponentFunc, ComponentInstance, ComponentItem, Type};

/// The exported interface every stage must provide.
pub(crate) const GENERATOR: &str = "sluicegate:stage/generator@0.1.0";

/// Checks that `component` exports `generator` with `resume: func(credits: u32) ->
/// option<list<u8>>` and `close: func()`.
pub(crate) fn check_exports(
    engine: &wasmtime::Engine,
    component: &Component,
) -> Result<(), String> {
    let ty = component.component_type();
    let export = ty
        .get_export(engine, GENERATOR)
        .ok_or_else(|| format!("it does not export the interface `{GENERATOR}`"))?;
    let ComponentItem::ComponentInstance(generator) = export.ty else {
        return Err(format!(
            "its export `{GENERATOR}` is not an interface instance"
        ));
    };
    let resume = func(engine, &generator, "resume")?;
    let params: Vec<Type> = resume.params().map(|(_, t)| t).collect();
    let results: Vec<Type> = resume.results().collect();
    if !matches!(params.as_slice(), [Type::U32]) || !is_option_of_bytes(&results) {
        return Err(format!(
            "`{GENERATOR}#resume` has the wrong type: expected func(credits: u32) -> \
             option<list<u8>>, found {} parameter(s) and {} result(s) of other types",
            params.len(),
            results.len()
        ));
    }
    let close = func(engine, &generator, "close")?;
    if close.params().len() != 0 || close.results().len() != 0 {
        return Err(format!(
            "`{GENERATOR}#close` has the wrong type: expected func()"
        ));
    }
    Ok(())
}

fn func(
    engine: &wasmtime::Engine,
    instance: &ComponentInstance,
    name: &str,
) -> Result<ComponentFunc, String> {
    match instance.get_export(engine, name).map(|e| e.ty) {
        Some(ComponentItem::ComponentFunc(f)) => Ok(f),
        Some(_) => Err(format!("`{GENERATOR}#{name}` is not a function")),
        None => Err(format!("`{GENERATOR}` does not export `{name}`")),
    }
}

fn is_option_of_bytes(results: &[Type]) -> bool {
    let [Type::Option(option)] = results else {
        return false;
    };
    let Type::List(list) = option.ty() else {
        return false;
    };
    matches!(list.ty(), Type::U8)
}
