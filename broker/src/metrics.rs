//! Prometheus text exposition (format 0.0.4) for the management API's `/metrics`.
//!
//! # Using it
//!
//! Build a [`PrometheusText`] per scrape, add every sample, and serve [`PrometheusText::finish`]
//! with [`CONTENT_TYPE`]:
//!
//! ```
//! use sluice_broker::metrics::PrometheusText;
//!
//! let mut latency_us = hdrhistogram::Histogram::<u64>::new(3).expect("3 significant digits");
//! latency_us.record(120).expect("in range");
//! latency_us.record(900).expect("in range");
//!
//! let mut text = PrometheusText::new();
//! for partition in ["1", "2"] {
//!     text.counter("sluice_appends_total", "Records appended.", &[("partition", partition)], 7);
//! }
//! text.gauge("sluice_up", "1 while the broker runs.", &[], 1.0);
//! // Recorded in microseconds, exposed in seconds.
//! text.histogram_from_hdr(
//!     "sluice_append_latency_seconds",
//!     "Append latency.",
//!     &[("partition", "1")],
//!     &latency_us,
//!     &[250, 1_000, 10_000],
//!     1e-6,
//! );
//! let body = text.finish();
//! assert!(body.contains("sluice_appends_total{partition=\"2\"} 7\n"));
//! assert!(body.contains("sluice_append_latency_seconds_bucket{partition=\"1\",le=\"0.00025\"} 1\n"));
//! ```
//!
//! # Rules it keeps
//!
//! - `# HELP` and `# TYPE` are written once per metric name, and all samples of a name are
//!   written together after them, whatever order they were added in (the help text of the
//!   first call wins).
//! - Label values are escaped (`\\`, `\"`, `\n`), help text too (`\\`, `\n`). Metric and label
//!   names are made valid by replacing other characters with `_`.
//! - A sample whose name was first used with another type is dropped, since one name has one
//!   type; [`PrometheusText::dropped_samples`] counts them.
//! - Histograms are read from `hdrhistogram`: buckets are cumulative, a value counts toward a
//!   bound when the lowest value of its HDR bucket is at most the bound, and `_sum` is the sum
//!   of each HDR bucket's middle value times its count (exact for values HDR stores exactly).
//!   At most [`HISTOGRAM_BUCKETS_MAX`] bounds are used.

use std::collections::HashMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Most bucket bounds of one histogram; further ones are ignored.
pub const HISTOGRAM_BUCKETS_MAX: usize = 64;

/// Significant digits `le` bounds and sums are rounded to, which hides the noise of
/// floating-point scaling (`1000 * 1e-6` is `0.0010000000000000002`).
const SIGNIFICANT_DIGITS: usize = 15;

/// A metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric name with its samples, as written.
#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: Kind,
    samples: String,
}

/// A page of metrics in the Prometheus text format, built sample by sample.
#[derive(Debug, Default)]
pub struct PrometheusText {
    /// In order of first use.
    families: Vec<Family>,
    /// Name to index into `families`.
    index: HashMap<String, usize>,
    dropped_samples: u64,
}

impl PrometheusText {
    /// An empty page.
    #[must_use]
    pub fn new() -> Self {
        PrometheusText::default()
    }

    /// Adds a counter sample: a count that only grows (by convention its name ends in
    /// `_total`).
    pub fn counter(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: u64,
    ) -> &mut Self {
        let name = sanitize_name(name, true);
        if let Some(samples) = self.family(&name, help, Kind::Counter) {
            write_sample(samples, &name, "", labels, None, &value.to_string());
        }
        self
    }

    /// Adds a gauge sample: a value that goes up and down.
    pub fn gauge(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> &mut Self {
        let name = sanitize_name(name, true);
        if let Some(samples) = self.family(&name, help, Kind::Gauge) {
            write_sample(samples, &name, "", labels, None, &format_value(value));
        }
        self
    }

    /// Adds a histogram from an HDR histogram: cumulative `_bucket` samples with `le` for each
    /// of `bucket_bounds` (in the histogram's unit; sorted and deduplicated here) and `+Inf`,
    /// then `_sum` and `_count`. `scale` converts the histogram's unit into the exposed one
    /// (microseconds to seconds: `1e-6`); it applies to `le` and `_sum`.
    pub fn histogram_from_hdr(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        hist: &Histogram<u64>,
        bucket_bounds: &[u64],
        scale: f64,
    ) -> &mut Self {
        let name = sanitize_name(name, true);
        let Some(samples) = self.family(&name, help, Kind::Histogram) else {
            return self;
        };
        let mut bounds: Vec<u64> = bucket_bounds.to_vec();
        bounds.sort_unstable();
        bounds.dedup();
        bounds.truncate(HISTOGRAM_BUCKETS_MAX);
        // HDR buckets, ascending: (lowest value, count).
        let recorded: Vec<(u64, u64)> = hist
            .iter_recorded()
            .map(|step| {
                (
                    hist.lowest_equivalent(step.value_iterated_to()),
                    step.count_at_value(),
                )
            })
            .collect();
        let mut cumulative: u64 = 0;
        let mut next = 0;
        for bound in bounds {
            while let Some(&(lowest, count)) = recorded.get(next) {
                if lowest > bound {
                    break;
                }
                cumulative = cumulative.saturating_add(count);
                next += 1;
            }
            let le = format_rounded(to_f64(bound) * scale);
            write_sample(
                samples,
                &name,
                "_bucket",
                labels,
                Some(&le),
                &cumulative.to_string(),
            );
        }
        let count = hist.len();
        write_sample(
            samples,
            &name,
            "_bucket",
            labels,
            Some("+Inf"),
            &count.to_string(),
        );
        // A fold from +0.0: `Iterator::sum` of nothing is -0.0.
        let sum = hist.iter_recorded().fold(0.0, |sum, step| {
            sum + to_f64(hist.median_equivalent(step.value_iterated_to()))
                * to_f64(step.count_at_value())
        });
        write_sample(
            samples,
            &name,
            "_sum",
            labels,
            None,
            &format_rounded(sum * scale),
        );
        write_sample(samples, &name, "_count", labels, None, &count.to_string());
        self
    }

    /// How many samples were dropped because their name was first used with another type.
    #[must_use]
    pub fn dropped_samples(&self) -> u64 {
        self.dropped_samples
    }

    /// The page: each metric's `# HELP`, `# TYPE` and samples, in order of first use.
    #[must_use]
    pub fn finish(self) -> String {
        let mut page = String::with_capacity(
            self.families
                .iter()
                .map(|family| family.samples.len() + family.help.len() + 2 * family.name.len() + 32)
                .sum(),
        );
        for family in self.families {
            let _ = writeln!(page, "# HELP {} {}", family.name, escape_help(&family.help));
            let _ = writeln!(page, "# TYPE {} {}", family.name, family.kind.name());
            page.push_str(&family.samples);
        }
        page
    }

    /// The sample buffer of `name`, created with `help` and `kind` on first use; `None` (and
    /// the sample counted as dropped) if `name` has another type.
    fn family(&mut self, name: &str, help: &str, kind: Kind) -> Option<&mut String> {
        let position = if let Some(&position) = self.index.get(name) {
            position
        } else {
            self.families.push(Family {
                name: name.to_owned(),
                help: help.to_owned(),
                kind,
                samples: String::new(),
            });
            let position = self.families.len() - 1;
            self.index.insert(name.to_owned(), position);
            position
        };
        let family = &mut self.families[position];
        if family.kind == kind {
            Some(&mut family.samples)
        } else {
            self.dropped_samples += 1;
            None
        }
    }
}

/// Writes `name{labels,le="..."} value\n` (`suffix` after the name).
fn write_sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    le: Option<&str>,
    value: &str,
) {
    out.push_str(name);
    out.push_str(suffix);
    let all = labels
        .iter()
        .map(|(label, value)| (sanitize_name(label, false), *value))
        .chain(le.map(|le| ("le".to_owned(), le)));
    let mut first = true;
    for (label, label_value) in all {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{label}=\"{}\"", escape_label_value(label_value));
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// A valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) or label name (the same without `:`),
/// other characters replaced by `_`.
fn sanitize_name(name: &str, allow_colon: bool) -> String {
    let mut clean: String = name
        .chars()
        .enumerate()
        .map(|(position, c)| {
            let valid = c.is_ascii_alphabetic()
                || c == '_'
                || (allow_colon && c == ':')
                || (position > 0 && c.is_ascii_digit());
            if valid { c } else { '_' }
        })
        .collect();
    if clean.is_empty() {
        clean.push('_');
    }
    clean
}

fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as the format writes it: `NaN`, `+Inf`, `-Inf`, or the shortest exact
/// decimal.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}

/// [`format_value`] after rounding to [`SIGNIFICANT_DIGITS`].
fn format_rounded(value: f64) -> String {
    if !value.is_finite() {
        return format_value(value);
    }
    let rounded = format!("{value:.prec$e}", prec = SIGNIFICANT_DIGITS - 1)
        .parse::<f64>()
        .unwrap_or(value);
    format_value(rounded)
}

/// `value` as `f64`; exact below 2^53, the nearest `f64` above (fine for exposition).
#[allow(clippy::cast_precision_loss)]
fn to_f64(value: u64) -> f64 {
    value as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values_us: &[u64]) -> Histogram<u64> {
        let mut hist = Histogram::<u64>::new(3).expect("3 significant digits");
        for value in values_us {
            hist.record(*value).expect("within range");
        }
        hist
    }

    #[test]
    fn a_small_page_is_written_exactly() {
        let mut text = PrometheusText::new();
        text.counter(
            "sluice_appends_total",
            "Records appended.",
            &[("partition", "1")],
            5,
        );
        text.gauge("sluice_up", "1 while the broker runs.", &[], 1.0);
        // Added after another metric: still written with its family, under one HELP/TYPE.
        text.counter(
            "sluice_appends_total",
            "ignored: the first help wins",
            &[("partition", "2")],
            7,
        );
        text.histogram_from_hdr(
            "sluice_append_latency_seconds",
            "Append latency.",
            &[("partition", "1")],
            &histogram(&[100, 100, 1_500, 2_000]),
            &[1_800, 250, 1_000, 250],
            1e-6,
        );
        assert_eq!(
            text.finish(),
            "# HELP sluice_appends_total Records appended.\n\
             # TYPE sluice_appends_total counter\n\
             sluice_appends_total{partition=\"1\"} 5\n\
             sluice_appends_total{partition=\"2\"} 7\n\
             # HELP sluice_up 1 while the broker runs.\n\
             # TYPE sluice_up gauge\n\
             sluice_up 1\n\
             # HELP sluice_append_latency_seconds Append latency.\n\
             # TYPE sluice_append_latency_seconds histogram\n\
             sluice_append_latency_seconds_bucket{partition=\"1\",le=\"0.00025\"} 2\n\
             sluice_append_latency_seconds_bucket{partition=\"1\",le=\"0.001\"} 2\n\
             sluice_append_latency_seconds_bucket{partition=\"1\",le=\"0.0018\"} 3\n\
             sluice_append_latency_seconds_bucket{partition=\"1\",le=\"+Inf\"} 4\n\
             sluice_append_latency_seconds_sum{partition=\"1\"} 0.0037\n\
             sluice_append_latency_seconds_count{partition=\"1\"} 4\n"
        );
    }

    #[test]
    fn histograms_with_several_label_sets_share_one_header() {
        let mut text = PrometheusText::new();
        for partition in ["1", "2"] {
            text.histogram_from_hdr(
                "lat",
                "Latency.",
                &[("partition", partition)],
                &histogram(&[]),
                &[10],
                1.0,
            );
        }
        let page = text.finish();
        assert_eq!(page.matches("# TYPE lat histogram").count(), 1, "{page}");
        assert_eq!(page.matches("# HELP").count(), 1, "{page}");
        assert!(
            page.contains("lat_bucket{partition=\"2\",le=\"10\"} 0\n"),
            "{page}"
        );
        assert!(page.contains("lat_sum{partition=\"2\"} 0\n"), "{page}");
        assert!(page.contains("lat_count{partition=\"1\"} 0\n"), "{page}");
    }

    #[test]
    fn a_value_on_a_bound_counts_toward_it() {
        let mut text = PrometheusText::new();
        // 5000 is stored in an HDR bucket 4 wide at 3 significant digits.
        text.histogram_from_hdr(
            "h",
            "H.",
            &[],
            &histogram(&[5_000, 5_003, 5_004]),
            &[4_999, 5_000],
            1.0,
        );
        let page = text.finish();
        assert!(page.contains("h_bucket{le=\"4999\"} 0\n"), "{page}");
        assert!(page.contains("h_bucket{le=\"5000\"} 2\n"), "{page}");
        assert!(page.contains("h_bucket{le=\"+Inf\"} 3\n"), "{page}");
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut text = PrometheusText::new();
        text.gauge(
            "g",
            "line one\nback\\slash",
            &[("path", "a\"b\\c\nd"), ("bad-label", "x")],
            2.5,
        );
        assert_eq!(
            text.finish(),
            "# HELP g line one\\nback\\\\slash\n\
             # TYPE g gauge\n\
             g{path=\"a\\\"b\\\\c\\nd\",bad_label=\"x\"} 2.5\n"
        );
    }

    #[test]
    fn names_are_sanitized_and_special_values_written() {
        let mut text = PrometheusText::new();
        text.gauge("9lives-metric.x", "G.", &[], f64::NAN);
        text.gauge("up:ratio", "G.", &[], f64::INFINITY);
        text.gauge("down", "G.", &[], f64::NEG_INFINITY);
        text.gauge("", "G.", &[], -0.125);
        let page = text.finish();
        assert!(page.contains("\n_lives_metric_x NaN\n"), "{page}");
        assert!(page.contains("\nup:ratio +Inf\n"), "{page}");
        assert!(page.contains("\ndown -Inf\n"), "{page}");
        assert!(page.contains("\n_ -0.125\n"), "{page}");
    }

    #[test]
    fn a_name_keeps_its_first_type() {
        let mut text = PrometheusText::new();
        text.counter("x", "X.", &[], 1);
        text.gauge("x", "X.", &[], 2.0);
        assert_eq!(text.dropped_samples(), 1);
        assert_eq!(text.finish(), "# HELP x X.\n# TYPE x counter\nx 1\n");
    }

    #[test]
    fn rounding_hides_scaling_noise_only() {
        assert_eq!(format_rounded(1_000.0 * 1e-6), "0.001");
        assert_eq!(format_rounded(0.1 + 0.2), "0.3");
        assert_eq!(format_rounded(123_456_789.0), "123456789");
        assert_eq!(format_rounded(f64::INFINITY), "+Inf");
        assert_eq!(format_value(1e-7), "0.0000001");
    }
}
