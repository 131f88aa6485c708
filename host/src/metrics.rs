//! The Prometheus text exposition format (version 0.0.4) of a running pipeline's counters, for
//! a scrape endpoint (`sluicegate run --metrics ADDR`): one family per counter, labelled by
//! pipeline and stage. Reading them never enters a stage.

use crate::counters::StageStats;
use crate::pipeline::Probe;
use crate::report::{HopSnapshot, PartitionSpill};

impl Probe {
    /// Every hop's counters in the Prometheus text exposition format (version 0.0.4).
    pub fn prometheus(&self) -> String {
        let mut page = prometheus(self.pipeline(), &self.snapshot(), &self.sink());
        page += &partition_sinks(self.pipeline(), &self.partition_sinks());
        page += &partition_spills(self.pipeline(), &self.partition_spills());
        page
    }
}

/// The counters of every hop of pipeline `pipeline`, and its sink's, in the Prometheus text
/// exposition format (version 0.0.4): one family per counter, labelled by pipeline and stage.
fn prometheus(pipeline: &str, hops: &[HopSnapshot], sink: &StageStats) -> String {
    type Field = fn(&HopSnapshot) -> f64;
    let families: [(&str, &str, &str, Field); 13] = [
        (
            "records_in_total",
            "counter",
            "Records received from upstream.",
            |h| h.records_in as f64,
        ),
        (
            "records_total",
            "counter",
            "Records delivered downstream.",
            |h| h.stats.records as f64,
        ),
        (
            "chunks_total",
            "counter",
            "Chunks delivered downstream.",
            |h| h.stats.chunks as f64,
        ),
        (
            "bytes_total",
            "counter",
            "Bytes delivered downstream, framing included.",
            |h| h.stats.bytes as f64,
        ),
        (
            "resumes_total",
            "counter",
            "Resumes that entered the stage.",
            |h| h.stats.resumes_entered as f64,
        ),
        (
            "credits_granted_total",
            "counter",
            "Credits granted to the stage.",
            |h| h.stats.credits_granted as f64,
        ),
        ("restarts_total", "counter", "Restarts after faults.", |h| {
            h.stats.restarts as f64
        }),
        ("swaps_total", "counter", "Hot swaps.", |h| {
            h.stats.swaps as f64
        }),
        (
            "quarantined_records_total",
            "counter",
            "Records quarantined by restarts.",
            |h| h.stats.quarantined_records as f64,
        ),
        (
            "log_lines_suppressed_total",
            "counter",
            "Log lines over the stage's budget.",
            |h| h.stats.log_lines_suppressed as f64,
        ),
        (
            "resume_p50_seconds",
            "gauge",
            "Median resume time (inclusive of upstream).",
            |h| h.stats.resume_p50_us / 1e6,
        ),
        (
            "resume_p99_seconds",
            "gauge",
            "99th percentile resume time.",
            |h| h.stats.resume_p99_us / 1e6,
        ),
        (
            "memory_peak_bytes",
            "gauge",
            "Largest linear memory of any instance.",
            |h| h.stats.memory_peak_bytes as f64,
        ),
    ];
    let pipeline = escape_label(pipeline);
    let mut out = String::new();
    for (name, kind, help, field) in families {
        out += &format!("# HELP sluicegate_{name} {help}\n# TYPE sluicegate_{name} {kind}\n");
        for hop in hops {
            out += &format!(
                "sluicegate_{name}{{pipeline=\"{pipeline}\",stage=\"{}\"}} {}\n",
                escape_label(&hop.name),
                field(hop)
            );
        }
    }
    out += "# HELP sluicegate_stage_state Where each stage is in the protocol (1 for its state).\n\
            # TYPE sluicegate_stage_state gauge\n";
    for hop in hops {
        if let Some(state) = hop.state {
            let state = format!("{state:?}").to_lowercase();
            out += &format!(
                "sluicegate_stage_state{{pipeline=\"{pipeline}\",stage=\"{}\",state=\"{state}\"}} 1\n",
                escape_label(&hop.name)
            );
        }
    }
    for (name, help, value) in [
        (
            "sink_records_total",
            "Records that reached the sink.",
            sink.records,
        ),
        (
            "sink_chunks_total",
            "Chunks that reached the sink.",
            sink.chunks,
        ),
        (
            "sink_bytes_total",
            "Bytes that reached the sink.",
            sink.bytes,
        ),
    ] {
        out += &format!(
            "# HELP sluicegate_{name} {help}\n# TYPE sluicegate_{name} counter\n\
             sluicegate_{name}{{pipeline=\"{pipeline}\"}} {value}\n"
        );
    }
    out
}

/// A label value with `\`, `"` and newlines escaped, as the exposition format requires.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A partitioned pipeline's sink, per partition (`partition="N"`; nothing for one chain).
fn partition_sinks(pipeline: &str, sinks: &[StageStats]) -> String {
    per_partition(
        pipeline,
        sinks,
        &[
            (
                "partition_sink_records_total",
                "counter",
                "Records that reached the sink from each partition.",
                |s| s.records,
            ),
            (
                "partition_sink_chunks_total",
                "counter",
                "Chunks that reached the sink from each partition.",
                |s| s.chunks,
            ),
            (
                "partition_sink_bytes_total",
                "counter",
                "Bytes that reached the sink from each partition.",
                |s| s.bytes,
            ),
        ],
    )
}

/// A routed partitioned pipeline's spill files, per partition (`partition="N"`): the bytes
/// waiting in them now (how far behind the partition is) and the chunks that went through them.
fn partition_spills(pipeline: &str, spills: &[PartitionSpill]) -> String {
    per_partition(
        pipeline,
        spills,
        &[
            (
                "partition_spill_bytes",
                "gauge",
                "Bytes of records waiting in each partition's spill files.",
                |s| s.bytes,
            ),
            (
                "partition_spilled_chunks_total",
                "counter",
                "Chunks that went through each partition's spill files.",
                |s| s.chunks,
            ),
        ],
    )
}

/// A family (name, type, help, value) per partition of `rows`, labelled `partition="N"`;
/// nothing when there are no rows.
type Family<T> = (&'static str, &'static str, &'static str, fn(&T) -> u64);

fn per_partition<T>(pipeline: &str, rows: &[T], families: &[Family<T>]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let pipeline = escape_label(pipeline);
    let mut out = String::new();
    for (name, kind, help, field) in families {
        out += &format!("# HELP sluicegate_{name} {help}\n# TYPE sluicegate_{name} {kind}\n");
        for (partition, row) in rows.iter().enumerate() {
            out += &format!(
                "sluicegate_{name}{{pipeline=\"{pipeline}\",partition=\"{partition}\"}} {}\n",
                field(row)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partitioned_pipeline_has_a_sink_series_per_partition() {
        let sink = |records| StageStats {
            records,
            ..StageStats::default()
        };
        let page = partition_sinks("p", &[sink(3), sink(4)]);
        assert!(
            page.contains(
                "sluicegate_partition_sink_records_total{pipeline=\"p\",partition=\"1\"} 4\n"
            ),
            "{page}"
        );
        assert!(
            partition_sinks("p", &[]).is_empty(),
            "nothing for one chain"
        );
    }

    #[test]
    fn a_routed_partitioned_pipeline_has_a_spill_series_per_partition() {
        let spill = |bytes, chunks| PartitionSpill { bytes, chunks };
        let page = partition_spills("p", &[spill(0, 0), spill(4096, 7)]);
        assert!(
            page.contains("# TYPE sluicegate_partition_spill_bytes gauge\n")
                && page.contains(
                    "sluicegate_partition_spill_bytes{pipeline=\"p\",partition=\"1\"} 4096\n"
                )
                && page.contains(
                    "sluicegate_partition_spilled_chunks_total{pipeline=\"p\",partition=\"1\"} 7\n"
                ),
            "{page}"
        );
        assert!(
            partition_spills("p", &[]).is_empty(),
            "nothing without lanes"
        );
    }

    #[test]
    fn prometheus_text_has_one_sample_per_hop_and_escapes_label_values() {
        let hop = |name: &str, records: u64| HopSnapshot {
            name: name.into(),
            state: Some(crate::StageState::Suspended),
            records_in: 7,
            stats: StageStats {
                records,
                ..StageStats::default()
            },
            path: None,
        };
        let sink = StageStats {
            records: 3,
            ..StageStats::default()
        };
        let page = prometheus("p\"1", &[hop("a", 5), hop("b\\\n", 3)], &sink);
        assert!(
            page.contains("# TYPE sluicegate_records_total counter\n"),
            "{page}"
        );
        assert!(
            page.contains("sluicegate_records_total{pipeline=\"p\\\"1\",stage=\"a\"} 5\n"),
            "{page}"
        );
        assert!(
            page.contains("sluicegate_records_total{pipeline=\"p\\\"1\",stage=\"b\\\\\\n\"} 3\n"),
            "{page}"
        );
        assert!(
            page.contains(
                "sluicegate_stage_state{pipeline=\"p\\\"1\",stage=\"a\",state=\"suspended\"} 1\n"
            ),
            "{page}"
        );
        assert!(
            page.contains("sluicegate_sink_records_total{pipeline=\"p\\\"1\"} 3\n"),
            "{page}"
        );
        // Every sample line is `name{labels} value`, with a value that parses.
        for line in page.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
