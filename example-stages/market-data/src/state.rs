//! The bytes a stage hands to its next version in a hot swap: a version byte, then
//! little-endian fields. [`Writer`] builds them; [`Reader`] takes them apart and says what was
//! truncated instead of panicking.

use crate::records::Symbol;

/// Builds a state blob.
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    /// A blob of format `version`.
    pub(crate) fn new(version: u8) -> Self {
        Writer(vec![version])
    }

    pub(crate) fn u8(&mut self, value: u8) -> &mut Self {
        self.0.push(value);
        self
    }

    pub(crate) fn u32(&mut self, value: u32) -> &mut Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub(crate) fn u64(&mut self, value: u64) -> &mut Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub(crate) fn i64(&mut self, value: i64) -> &mut Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub(crate) fn symbol(&mut self, symbol: &Symbol) -> &mut Self {
        self.0.extend_from_slice(&symbol.0);
        self
    }

    /// A length as a `u32` (states this large do not fit a chunk anyway).
    pub(crate) fn len(&mut self, len: usize) -> &mut Self {
        self.u32(u32::try_from(len).unwrap_or(u32::MAX))
    }

    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// Takes a state blob apart.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads a blob of `what` (for errors), refusing any version but `version`.
    pub(crate) fn new(bytes: &'a [u8], what: &'static str, version: u8) -> Result<Self, String> {
        let mut reader = Reader { rest: bytes, what };
        match reader.u8()? {
            v if v == version => Ok(reader),
            v => Err(format!("unknown {what} state version {v}")),
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| format!("{} state is truncated", self.what))?;
        self.rest = tail;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        self.take::<1>().map(|[b]| b)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        self.take().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        self.take().map(u64::from_le_bytes)
    }

    pub(crate) fn i64(&mut self) -> Result<i64, String> {
        self.take().map(i64::from_le_bytes)
    }

    pub(crate) fn symbol(&mut self) -> Result<Symbol, String> {
        self.take().map(Symbol)
    }

    /// Ends the blob: bytes left over mean it is not what it claims to be.
    pub(crate) fn finish(self) -> Result<(), String> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(format!(
                "{} state has {n} unexpected trailing bytes",
                self.what
            )),
        }
    }
}
