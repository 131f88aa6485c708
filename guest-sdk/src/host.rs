//! What the host offers a stage: its upstream, its configuration, and logging.

use std::str::FromStr;

use crate::batch::Input;
use crate::bindings::sluicegate::stage::{host, upstream};

pub use crate::bindings::sluicegate::stage::host::Level;

/// The stage upstream of this one. Pulling is how a stage gets input (delegated demand).
#[derive(Debug, Default)]
pub struct Upstream {
    _private: (),
}

impl Upstream {
    /// A handle to this stage's upstream. [`Stage`](crate::Stage) and [`Map`](crate::Map)
    /// are handed one; a [`RawStage`](crate::RawStage) makes its own.
    pub fn new() -> Self {
        Upstream { _private: () }
    }

    /// Asks upstream for at most `credits` records. `None` means upstream is exhausted (and
    /// stays so); an empty [`Input`] means "nothing now".
    ///
    /// Only pull while serving a resume with credits; while closing, never pull.
    pub fn pull(&mut self, credits: u32) -> Option<Input> {
        upstream::pull(credits).map(Input::new)
    }
}

/// The stage's configuration: key/value pairs from the pipeline file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// Reads the configuration from the host.
    pub fn from_host() -> Self {
        Config {
            entries: host::config(),
        }
    }

    /// Builds a configuration from pairs (for unit tests of a stage's logic).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Config {
            entries: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `key`, if set (the last one wins when a key repeats).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parses `key`, or returns `default` when it is not set. The error names the key.
    pub fn parse<T: FromStr>(&self, key: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e| format!("config `{key}` = `{raw}`: {e}")),
        }
    }

    /// Splits a comma-separated value into its trimmed, non-empty items.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// All entries, in file order.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }
}

/// Writes a log line; the host tags it with the stage's name.
pub fn log(level: Level, message: &str) {
    host::log(level, message, &[]);
}

/// Writes a log line with key/value fields.
pub fn log_with(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    host::log(level, message, &fields);
}
