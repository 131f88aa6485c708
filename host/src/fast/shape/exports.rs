//! The stage's exports: following each through instances, re-export shims and aliases to the
//! lift behind it.

use wasmparser::ComponentExternalKind;

use super::reader::{CFunc, CInst, Reader};
use super::{Exports, Lift, Reason};

const GENERATOR: &str = "sluicegate:stage/generator@0.1.0";
const STATE: &str = "sluicegate:stage/state@0.1.0";

impl Reader {
    /// The lift behind component function `index`.
    fn lift(&self, index: u32, depth: u32) -> Result<Lift, String> {
        if depth > 64 {
            return Err("its exports go round in circles".into());
        }
        match self.cfuncs.get(index as usize) {
            Some(CFunc::Lift(lift)) => Ok(*lift),
            Some(CFunc::Same(other)) => self.lift(*other, depth + 1),
            Some(CFunc::Via { instance, name }) => {
                let (kind, index) = self.instance_export(*instance, name, depth + 1)?;
                if kind != ComponentExternalKind::Func {
                    return Err(format!("its export `{name}` is not a function"));
                }
                self.lift(index, depth + 1)
            }
            Some(CFunc::Import { interface, name }) => Err(format!(
                "it exports `{interface}` function `{name}` it imports"
            )),
            Some(CFunc::Other(what)) => Err(format!("it exports {what}")),
            None => Err("it exports a function it does not define".into()),
        }
    }

    /// Export `name` of component instance `instance`, as (kind, index in this component).
    fn instance_export(
        &self,
        instance: u32,
        name: &str,
        depth: u32,
    ) -> Result<(ComponentExternalKind, u32), String> {
        if depth > 64 {
            return Err("its instances go round in circles".into());
        }
        let find = |list: &[(String, ComponentExternalKind, u32)], name: &str| {
            list.iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, kind, index)| (*kind, *index))
        };
        match self.cinsts.get(instance as usize) {
            Some(CInst::Bag(items)) => {
                find(items, name).ok_or_else(|| format!("its instance has no `{name}`"))
            }
            Some(CInst::Same(other)) => self.instance_export(*other, name, depth + 1),
            Some(CInst::Instantiate { component, args }) => {
                let nested = self
                    .components
                    .get(*component as usize)
                    .ok_or_else(|| "it instantiates a component it does not define".to_string())?;
                if let Some(why) = nested.complex {
                    return Err(format!("its exports go through {why}"));
                }
                let import = nested
                    .reexports
                    .get(name)
                    .ok_or_else(|| format!("its export shim has no `{name}`"))?;
                find(args, import).ok_or_else(|| format!("its export shim is not given `{import}`"))
            }
            Some(CInst::Import(interface)) => {
                Err(format!("it re-exports the import `{interface}`"))
            }
            Some(CInst::Other) | None => {
                Err("its exports come from an instance it does not define".into())
            }
        }
    }

    /// The stage's exports as lifts.
    pub(super) fn exports(&self) -> Result<Exports, Reason> {
        let interface = |name: &str| -> Result<Option<u32>, Reason> {
            match self.exports.get(name) {
                Some((ComponentExternalKind::Instance, index)) => Ok(Some(*index)),
                Some(_) => Err(format!("its export `{name}` is not an instance")),
                None => Ok(None),
            }
        };
        let func = |instance: u32, name: &str| -> Result<Lift, Reason> {
            let (kind, index) = self.instance_export(instance, name, 0)?;
            if kind != ComponentExternalKind::Func {
                return Err(format!("its export `{name}` is not a function"));
            }
            self.lift(index, 0)
        };
        let generator =
            interface(GENERATOR)?.ok_or_else(|| format!("it does not export `{GENERATOR}`"))?;
        let state = match interface(STATE)? {
            Some(state) => Some((func(state, "snapshot")?, func(state, "restore")?)),
            None => None,
        };
        Ok(Exports {
            resume: func(generator, "resume")?,
            close: func(generator, "close")?,
            state,
        })
    }
}
