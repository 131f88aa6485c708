//! Components nested inside the top-level one: only a pure re-export shim (what
//! wit-component makes for each exported interface) is followed.

use std::collections::HashMap;

use wasmparser::{ComponentExternalKind, ComponentTypeRef, Payload};

use super::reader::Refusal;

/// A component nested inside: only a pure re-export shim is followed (what wit-component
/// makes for each exported interface): `export name -> import name` for its functions.
#[derive(Debug, Clone, Default)]
pub(super) struct Nested {
    pub(super) reexports: HashMap<String, String>,
    /// Why it is not a pure re-export shim, if it is not.
    pub(super) complex: Option<&'static str>,
}

/// The function index space of a nested component: import names, or other indices.
#[derive(Default)]
pub(super) struct NestedFuncs(
    pub(super) Vec<Option<String>>,
    pub(super) Vec<(String, u32)>,
);

/// A payload of a nested component: records its function imports and re-exports; anything
/// else makes it "complex" (not followed).
pub(super) fn nested_payload(
    nested: &mut Nested,
    funcs: &mut NestedFuncs,
    payload: &Payload<'_>,
) -> Result<(), Refusal> {
    match payload {
        Payload::Version { .. }
        | Payload::ComponentTypeSection(_)
        | Payload::CustomSection(_)
        | Payload::End(_) => {}
        Payload::ComponentImportSection(imports) => {
            for import in imports.clone() {
                let import = import?;
                if let ComponentTypeRef::Func(_) = import.ty {
                    funcs.0.push(Some(import.name.name.to_string()));
                }
            }
        }
        Payload::ComponentExportSection(exports) => {
            for export in exports.clone() {
                let export = export?;
                if export.kind == ComponentExternalKind::Func {
                    let target = funcs.0.get(export.index as usize).cloned().flatten();
                    funcs.1.push((export.name.name.to_string(), export.index));
                    funcs.0.push(target);
                }
            }
        }
        _ => {
            nested
                .complex
                .get_or_insert("a nested component does more than re-export");
        }
    }
    Ok(())
}
