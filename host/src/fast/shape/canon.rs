//! Aliases and canonical functions: how the component's lifts, lowerings and resource drops
//! map to core functions, with the canonical options each is given.

use wasmparser::{
    CanonicalFunction, CanonicalOption, ComponentAlias, ComponentExternalKind,
    ComponentOuterAliasKind, ExternalKind,
};

use super::nested::Nested;
use super::reader::{CFunc, CInst, CType, Reader, Refusal, no};
use super::{Alias, CoreFunc, Lift};
use crate::fast::imports::HostImport;

impl Reader {
    /// Records a component alias in the index space it adds to.
    pub(super) fn alias(&mut self, alias: ComponentAlias<'_>) -> Result<(), Refusal> {
        match alias {
            ComponentAlias::CoreInstanceExport {
                kind,
                instance_index,
                name,
            } => {
                let alias = Alias {
                    instance: instance_index,
                    name: name.to_string(),
                };
                match kind {
                    ExternalKind::Func | ExternalKind::FuncExact => {
                        self.funcs.push(CoreFunc::Export(alias))
                    }
                    ExternalKind::Memory => self.memories.push(alias),
                    ExternalKind::Table => self.tables.push(alias),
                    ExternalKind::Global => self.globals.push(alias),
                    ExternalKind::Tag => return no("it passes exception tags"),
                }
            }
            ComponentAlias::InstanceExport {
                kind,
                instance_index,
                name,
            } => {
                let imported = match self.cinsts.get(instance_index as usize) {
                    Some(CInst::Import(interface)) => Some(interface.clone()),
                    _ => None,
                };
                match kind {
                    ComponentExternalKind::Func => self.cfuncs.push(match imported {
                        Some(interface) => CFunc::Import {
                            interface,
                            name: name.to_string(),
                        },
                        None => CFunc::Via {
                            instance: instance_index,
                            name: name.to_string(),
                        },
                    }),
                    ComponentExternalKind::Type => self.ctypes.push(match imported {
                        Some(interface) => CType::Imported {
                            interface,
                            name: name.to_string(),
                        },
                        None => CType::Other,
                    }),
                    ComponentExternalKind::Instance => self.cinsts.push(CInst::Other),
                    ComponentExternalKind::Component => self.components.push(Nested {
                        complex: Some("an aliased component"),
                        ..Nested::default()
                    }),
                    ComponentExternalKind::Module => return no("it aliases a core module"),
                    ComponentExternalKind::Value => return no("it aliases a value"),
                }
            }
            ComponentAlias::Outer { kind, .. } => match kind {
                ComponentOuterAliasKind::Type => self.ctypes.push(CType::Other),
                ComponentOuterAliasKind::CoreType => {}
                ComponentOuterAliasKind::CoreModule => return no("it aliases a core module"),
                ComponentOuterAliasKind::Component => self.components.push(Nested {
                    complex: Some("an outer-aliased component"),
                    ..Nested::default()
                }),
            },
        }
        Ok(())
    }

    /// Records a canonical function: a lift, a lowering of a host function, or a
    /// `resource.drop` of an imported resource; anything else is refused.
    pub(super) fn canon(&mut self, canon: CanonicalFunction) -> Result<(), Refusal> {
        match canon {
            CanonicalFunction::Lift {
                core_func_index,
                options,
                ..
            } => {
                let (memory, realloc, post_return) = options_of(&options)?;
                self.cfuncs.push(CFunc::Lift(Lift {
                    func: core_func_index,
                    memory,
                    realloc,
                    post_return,
                }));
            }
            CanonicalFunction::Lower {
                func_index,
                options,
            } => {
                let (memory, realloc, post_return) = options_of(&options)?;
                if post_return.is_some() {
                    return no("a lowering names a post-return function");
                }
                let (interface, name) = self.imported_func(func_index)?;
                let Some(import) = HostImport::find(&interface, &name) else {
                    return no(format!(
                        "it imports `{interface}` function `{name}`, which the fast path does \
                         not serve"
                    ));
                };
                if import.needs_memory() && memory.is_none()
                    || import.needs_realloc() && realloc.is_none()
                {
                    return no(format!(
                        "it lowers `{interface}` function `{name}` without a memory or realloc"
                    ));
                }
                self.funcs.push(CoreFunc::Host {
                    import,
                    memory,
                    realloc,
                });
            }
            CanonicalFunction::ResourceDrop { resource } => {
                let import = match self.ctypes.get(resource as usize) {
                    Some(CType::Imported { interface, name }) => {
                        HostImport::find_drop(interface, name).ok_or_else(|| {
                            Refusal::Unsupported(format!(
                                "it drops `{interface}` resource `{name}`, which the fast path \
                                 does not serve"
                            ))
                        })?
                    }
                    _ => return no("it drops a resource it defines itself"),
                };
                self.funcs.push(CoreFunc::Host {
                    import,
                    memory: None,
                    realloc: None,
                });
            }
            other => {
                return no(format!(
                    "it uses `canon {}`, which the fast path does not serve",
                    canon_name(&other)
                ));
            }
        }
        Ok(())
    }

    /// The imported interface function behind component function `index`.
    fn imported_func(&self, index: u32) -> Result<(String, String), Refusal> {
        let mut index = index;
        for _ in 0..64 {
            match self.cfuncs.get(index as usize) {
                Some(CFunc::Import { interface, name }) => {
                    return Ok((interface.clone(), name.clone()));
                }
                Some(CFunc::Same(other)) => index = *other,
                Some(CFunc::Lift(_)) | Some(CFunc::Via { .. }) => {
                    return no(
                        "it lowers a function of its own (an adapter between its instances)",
                    );
                }
                Some(CFunc::Other(what)) => return no(format!("it lowers {what}")),
                None => return no("it lowers a function it does not define"),
            }
        }
        no("its function aliases go round in circles")
    }
}

/// A lift's or lowering's canonical options: (memory, realloc, post-return).
type CanonOptions = (Option<u32>, Option<u32>, Option<u32>);

/// A lift's or lowering's (memory, realloc, post-return); anything but UTF-8 strings and the
/// synchronous ABI is refused.
fn options_of(options: &[CanonicalOption]) -> Result<CanonOptions, Refusal> {
    let (mut memory, mut realloc, mut post_return) = (None, None, None);
    for option in options {
        match option {
            CanonicalOption::UTF8 => {}
            CanonicalOption::Memory(m) => memory = Some(*m),
            CanonicalOption::Realloc(f) => realloc = Some(*f),
            CanonicalOption::PostReturn(f) => post_return = Some(*f),
            CanonicalOption::UTF16 | CanonicalOption::CompactUTF16 => {
                return no("it passes strings as UTF-16");
            }
            CanonicalOption::Async | CanonicalOption::Callback(_) => {
                return no("it uses the async ABI");
            }
            CanonicalOption::CoreType(_) | CanonicalOption::Gc => {
                return no("it uses the GC ABI");
            }
        }
    }
    Ok((memory, realloc, post_return))
}

/// A short name of a canonical built-in, for the reason given.
fn canon_name(canon: &CanonicalFunction) -> String {
    let debug = format!("{canon:?}");
    let head = debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("built-in");
    head.chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let lower = c.to_ascii_lowercase();
            if c.is_uppercase() && i > 0 {
                vec!['.', lower]
            } else {
                vec![lower]
            }
        })
        .collect()
}
