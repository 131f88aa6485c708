//! Host-native sources: a file and standard input (the library's), or a kind the program
//! running the pipeline adds. Each honours the demand exactly (records and bytes: a record
//! that does not fit waits for the next pull) and is counted like a stage.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read as _};
use std::sync::Arc;

use crate::chunk::Chunk;
use crate::config::{FILE, FileSource, RecordFormat, STDIN, SourceSpec, StdinSource, base_dir};
use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::upstream::{Demand, Upstream};

/// Name of the host-native source hop in reports and errors.
pub(crate) const SOURCE: &str = "source";

/// Largest record a file or stdin source accepts (a framed length above it is corruption; a
/// longer line is refused rather than buffered without bound).
const MAX_RECORD_BYTES: u32 = 16 << 20;

/// A native source with its counters.
pub(crate) struct CountedSource {
    inner: Box<dyn Upstream>,
    counters: Arc<Counters>,
    done: bool,
}

/// Opens a source of a kind a program added, from its spec.
pub(crate) type OpenSource = dyn Fn(&SourceSpec) -> Result<Box<dyn Upstream>> + Send + Sync;

impl CountedSource {
    /// Opens the source `spec` describes: `file` and `stdin` here, any other kind with the
    /// opener the program added for it in `kinds`.
    pub(crate) fn open(
        spec: &SourceSpec,
        origin: &std::path::Path,
        kinds: &HashMap<String, Arc<OpenSource>>,
    ) -> Result<Self> {
        let settings_error = |message: String| Error::Config {
            file: origin.display().to_string(),
            message,
        };
        let inner: Box<dyn Upstream> = match spec.kind.as_str() {
            FILE => {
                let FileSource { path, format } = spec.settings().map_err(settings_error)?;
                let path = base_dir(origin).join(path);
                let file = std::fs::File::open(&path)
                    .map_err(|e| io_error(format!("cannot open {}: {e}", path.display())))?;
                Box::new(ReaderSource::new(BufReader::new(file), format))
            }
            STDIN => {
                let StdinSource { format } = spec.settings().map_err(settings_error)?;
                Box::new(ReaderSource::new(BufReader::new(std::io::stdin()), format))
            }
            kind => match kinds.get(kind) {
                Some(open) => open(spec)?,
                None => {
                    let mut known: Vec<&str> = kinds.keys().map(String::as_str).collect();
                    known.extend([FILE, STDIN]);
                    known.sort_unstable();
                    return Err(settings_error(format!(
                        "[source] kind `{kind}` is unknown here; the kinds are {}",
                        known.join(", ")
                    )));
                }
            },
        };
        Ok(CountedSource {
            inner,
            counters: Arc::new(Counters::default()),
            done: false,
        })
    }

    /// Counts `inner` like a source (a partition's input, say).
    pub(crate) fn wrap(inner: Box<dyn Upstream>) -> Self {
        CountedSource {
            inner,
            counters: Arc::new(Counters::default()),
            done: false,
        }
    }

    pub(crate) fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }
}

impl Upstream for CountedSource {
    fn pull(&mut self, demand: Demand) -> Result<Option<Chunk>> {
        if self.done {
            return Ok(None);
        }
        self.counters.entered_resume(demand.records);
        let answer = self.inner.pull(demand)?;
        match &answer {
            Some(chunk) if demand.records > 0 => {
                self.counters.delivered(chunk.len(), chunk.as_bytes().len())
            }
            Some(_) => {}
            None => self.done = true,
        }
        Ok(answer)
    }
}

fn io_error(message: String) -> Error {
    Error::Io {
        stage: SOURCE.into(),
        message,
    }
}

struct ReaderSource<R> {
    reader: R,
    format: RecordFormat,
    record: Vec<u8>,
    /// `record` holds a record that did not fit the last pull.
    held: bool,
}

impl<R: BufRead + Send> ReaderSource<R> {
    fn new(reader: R, format: RecordFormat) -> Self {
        ReaderSource {
            reader,
            format,
            record: Vec::new(),
            held: false,
        }
    }

    /// Reads the next record into `self.record`; `false` at a clean end of input.
    fn next_record(&mut self) -> Result<bool> {
        self.record.clear();
        match self.format {
            RecordFormat::Lines => {
                // At most one record and its newline: a longer line is refused, not buffered.
                let read = (&mut self.reader)
                    .take(u64::from(MAX_RECORD_BYTES) + 1)
                    .read_until(b'\n', &mut self.record)
                    .map_err(|e| io_error(format!("reading input: {e}")))?;
                if self.record.last() == Some(&b'\n') {
                    self.record.pop();
                } else if self.record.len() > MAX_RECORD_BYTES as usize {
                    return Err(io_error(format!(
                        "a line longer than the {MAX_RECORD_BYTES} bytes a record may have"
                    )));
                }
                Ok(read > 0)
            }
            RecordFormat::Framed => {
                let mut prefix = [0u8; 4];
                match self.reader.read_exact(&mut prefix) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
                    Err(e) => return Err(io_error(format!("reading input: {e}"))),
                }
                let len = u32::from_le_bytes(prefix);
                if len > MAX_RECORD_BYTES {
                    return Err(io_error(format!(
                        "a framed record announces {len} bytes, more than the {MAX_RECORD_BYTES} allowed"
                    )));
                }
                self.record.resize(len as usize, 0);
                self.reader
                    .read_exact(&mut self.record)
                    .map_err(|e| io_error(format!("input ends inside a {len}-byte record: {e}")))?;
                Ok(true)
            }
        }
    }
}

impl<R: BufRead + Send> Upstream for ReaderSource<R> {
    fn pull(&mut self, demand: Demand) -> Result<Option<Chunk>> {
        let mut chunk = Chunk::empty();
        while chunk.len() < demand.records {
            if !std::mem::take(&mut self.held) && !self.next_record()? {
                return Ok((!chunk.is_empty() || demand.records == 0).then_some(chunk));
            }
            if !demand.admits(&chunk, self.record.len()) {
                self.held = true;
                break;
            }
            chunk.push(&self.record);
        }
        Ok(Some(chunk))
    }
}
