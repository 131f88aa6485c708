//! The example stages embedded in the binary, named `builtin:NAME` in pipeline files.

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// The prefix that names an embedded stage instead of a file.
pub(crate) const SCHEME: &str = "builtin:";

/// The bytes of the embedded stage `name`, if there is one.
pub(crate) fn component(name: &str) -> Option<&'static [u8]> {
    BUILTIN
        .iter()
        .find(|(builtin, _)| *builtin == name)
        .map(|(_, bytes)| *bytes)
}

/// Names of every embedded stage.
pub(crate) fn names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(name, _)| *name)
}
