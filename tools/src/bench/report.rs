//! What a gateway run prints and writes: the [`Summary`] (the JSON object of `--json`), the
//! text table, and a self-contained HTML report whose plots are inline SVG drawn here, with the
//! plotted data embedded as JSON (no scripts, no external resources).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::args::GatewayArgs;
use super::tracker::Measurements;

/// Quantile iteration steps per halving of the distance to 100% (the percentile plot's
/// resolution).
const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// The percentile plot's x axis ends at 99.9999% at most, and at 99% at least.
const DECADES_MAX: u32 = 6;
const DECADES_MIN: u32 = 2;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// µs to ms.
#[must_use]
#[expect(clippy::cast_precision_loss, reason = "latencies far below 2^52 µs")]
pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Percentiles of one latency series, in ms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// `instance`, `job push delay` (`job activation delay` when polling), or the RPC's name.
    pub name: String,
    /// Samples.
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Series {
    fn of(name: &str, histogram: &Histogram<u64>) -> Self {
        let at = |quantile: f64| {
            if histogram.is_empty() {
                0.0
            } else {
                ms(histogram.value_at_quantile(quantile))
            }
        };
        Series {
            name: name.to_owned(),
            count: histogram.len(),
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: if histogram.is_empty() {
                0.0
            } else {
                ms(histogram.max())
            },
        }
    }
}

/// The run's figures; `--json` prints it as one object.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub workload: &'static str,
    pub gateway: String,
    /// `stream` or `poll`.
    pub activate: &'static str,
    /// Instances per second asked for; 0: as fast as possible.
    pub rate: u32,
    pub workers: u32,
    pub in_flight: u32,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Instances started in the window and created.
    pub created: u64,
    /// Of those, the completed ones.
    pub completed: u64,
    /// Of those, the ones not completed when the run ended.
    pub unfinished: u64,
    /// Jobs of instances this run did not create, completed and not counted.
    pub leftover_jobs: u64,
    /// Jobs found by the fallback poll rather than pushed (`--activate stream`).
    pub fallback_jobs: u64,
    /// Completions per second over the window.
    pub pi_per_s: f64,
    /// Creations per second over the window.
    pub created_per_s: f64,
    pub pi_p50_ms: f64,
    pub pi_p90_ms: f64,
    pub pi_p99_ms: f64,
    pub pi_p999_ms: f64,
    pub pi_max_ms: f64,
    /// Failed RPCs.
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    /// `"Method CODE"` → count.
    pub errors_by_rpc: BTreeMap<String, u64>,
    /// Instance latency, job push delay and each RPC.
    pub series: Vec<Series>,
    /// Where the HTML report was written.
    pub report: String,
}

/// Each latency series: name and histogram, instance latency first. `activate` names how
/// jobs reached the workers (`stream`: pushed, `poll`: activated).
fn series_histograms<'m>(
    measurements: &'m Measurements,
    activate: &str,
) -> Vec<(String, &'m Histogram<u64>)> {
    let mut series = vec![("instance".to_owned(), &measurements.instance_latency)];
    if !measurements.job_push_delay.is_empty() {
        let name = if activate == "poll" {
            "job activation delay"
        } else {
            "job push delay"
        };
        series.push((name.to_owned(), &measurements.job_push_delay));
    }
    for (rpc, histogram) in &measurements.rpcs {
        series.push((rpc.name().to_owned(), histogram));
    }
    series
}

impl Summary {
    /// The summary of `measurements`, taken with `args`.
    #[must_use]
    pub fn new(args: &GatewayArgs, measurements: &Measurements) -> Self {
        let series: Vec<Series> = series_histograms(measurements, args.activation.name())
            .into_iter()
            .map(|(name, histogram)| Series::of(&name, histogram))
            .collect();
        let instance = series[0].clone();
        Summary {
            workload: "gateway",
            gateway: args.gateway.clone(),
            activate: args.activation.name(),
            rate: args.rate,
            workers: args.workers,
            in_flight: args.in_flight,
            duration_s: args.duration_s,
            warmup_s: args.warmup_s,
            created: measurements.created,
            completed: measurements.completed,
            unfinished: measurements.unfinished,
            leftover_jobs: measurements.leftover_jobs,
            fallback_jobs: measurements.fallback_jobs,
            pi_per_s: measurements.completed_per_s(),
            created_per_s: measurements.created_per_s(),
            pi_p50_ms: instance.p50_ms,
            pi_p90_ms: instance.p90_ms,
            pi_p99_ms: instance.p99_ms,
            pi_p999_ms: instance.p999_ms,
            pi_max_ms: instance.max_ms,
            errors: measurements.errors_total(),
            errors_by_code: measurements
                .errors_by_code()
                .into_iter()
                .map(|(code, count)| (code.to_owned(), count))
                .collect(),
            errors_by_rpc: measurements
                .errors
                .iter()
                .map(|((rpc, code), count)| (format!("{} {code}", rpc.name()), *count))
                .collect(),
            series,
            report: args.report.display().to_string(),
        }
    }

    /// One line saying how the run was set up.
    #[must_use]
    pub fn parameters(&self) -> String {
        let rate = if self.rate == 0 {
            format!(
                "as fast as possible ({} instances in flight)",
                self.in_flight
            )
        } else {
            format!("{} instances/s", self.rate)
        };
        format!(
            "gateway {}, {} workers ({}), rate {rate}, {} s measured after {} s warm-up",
            self.gateway, self.workers, self.activate, self.duration_s, self.warmup_s
        )
    }

    fn errors_line(&self) -> String {
        if self.errors == 0 {
            return "errors: 0".to_owned();
        }
        let by: Vec<String> = self
            .errors_by_rpc
            .iter()
            .map(|(what, count)| format!("{what} {count}"))
            .collect();
        format!("errors: {} ({})", self.errors, by.join(", "))
    }

    fn throughput_line(&self) -> String {
        format!(
            "throughput: {:.1} instances/s completed, {:.1}/s created; {} created, {} \
             completed, {} unfinished, {} leftover jobs",
            self.pi_per_s,
            self.created_per_s,
            self.created,
            self.completed,
            self.unfinished,
            self.leftover_jobs
        )
    }
}

const TABLE_COLUMNS: [&str; 7] = [
    "series", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
];

/// The text table: parameters, one row per series, throughput, errors, the report's place.
///
/// # Errors
///
/// When `out` fails.
pub fn write_table(summary: &Summary, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "sluice-bench gateway: {}", summary.parameters())?;
    let [name, count, p50, p90, p99, p999, max] = TABLE_COLUMNS;
    writeln!(
        out,
        "{name:<24} {count:>9} {p50:>9} {p90:>9} {p99:>9} {p999:>9} {max:>9}"
    )?;
    for series in &summary.series {
        writeln!(
            out,
            "{:<24} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            series.name,
            series.count,
            series.p50_ms,
            series.p90_ms,
            series.p99_ms,
            series.p999_ms,
            series.max_ms
        )?;
    }
    writeln!(out, "{}", summary.throughput_line())?;
    if summary.fallback_jobs > 0 {
        writeln!(
            out,
            "jobs not pushed but found by the fallback poll: {}",
            summary.fallback_jobs
        )?;
    }
    writeln!(out, "{}", summary.errors_line())?;
    writeln!(out, "report: {}", summary.report)
}

// ---------------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------------

fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The smallest 1, 2 or 5 × 10^k at or above `value` (1 for nothing).
fn nice_ceiling(value: f64) -> f64 {
    if !(value > 0.0 && value.is_finite()) {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|ceiling| *ceiling >= value * (1.0 - 1e-12))
        .unwrap_or(10.0 * magnitude)
}

/// A grid value without trailing zeros: 0.001, 0.5, 20, 1000.
fn tick_text(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// `(quantile, ms)` along `histogram`, as `HdrHistogram`'s percentile plot draws it.
fn percentile_points(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    histogram
        .iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|step| (step.quantile_iterated_to(), ms(step.value_iterated_to())))
        .collect()
}

/// The percentile plot's x: `log10(1 / (1 - quantile))`, capped at `decades`.
fn percentile_x(quantile: f64, decades: u32) -> f64 {
    let cap = f64::from(decades);
    if quantile >= 1.0 {
        return cap;
    }
    (1.0 / (1.0 - quantile)).log10().clamp(0.0, cap)
}

fn percentile_label(decade: u32) -> String {
    match decade {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        n => format!("99.{}%", "9".repeat(usize::try_from(n - 2).unwrap_or(0)))
            .replace("99.%", "99%"),
    }
}

/// The plot area inside an SVG of `WIDTH` × `HEIGHT`.
const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 210.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 50.0;

struct Frame {
    x_max: f64,
    /// The y axis's bottom: 0 on a linear axis, a power of ten on a log axis.
    y_min: f64,
    y_max: f64,
    y_log: bool,
}

impl Frame {
    fn x(&self, x: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * (x / self.x_max)
    }

    fn y(&self, y: f64) -> f64 {
        let fraction = if self.y_log {
            (y.max(self.y_min).log10() - self.y_min.log10())
                / (self.y_max.log10() - self.y_min.log10())
        } else {
            y / self.y_max
        };
        HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * fraction
    }

    /// The y grid's values: each power of ten on a log axis, 5 steps on a linear one.
    fn y_ticks(&self) -> Vec<f64> {
        if self.y_log {
            let (low, high) = (self.y_min.log10().round(), self.y_max.log10().round());
            let mut ticks = Vec::new();
            let mut exponent = low;
            while exponent <= high + 0.5 {
                ticks.push(10f64.powf(exponent));
                exponent += 1.0;
            }
            ticks
        } else {
            (0..=5u32)
                .map(|step| self.y_max * f64::from(step) / 5.0)
                .collect()
        }
    }

    /// Axes, y grid, and the y label.
    fn axes(&self, svg: &mut String, y_label: &str) {
        let (x0, x1, y0, y1) = (
            self.x(0.0),
            self.x(self.x_max),
            self.y(self.y_min),
            self.y(self.y_max),
        );
        let _ = write!(
            svg,
            r##"<rect x="{x0:.1}" y="{y1:.1}" width="{:.1}" height="{:.1}" fill="#fff" stroke="#999"/>"##,
            x1 - x0,
            y0 - y1
        );
        for value in self.y_ticks() {
            let y = self.y(value);
            let _ = write!(
                svg,
                r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
                x0 - 6.0,
                y + 4.0,
                tick_text(value)
            );
        }
        let _ = write!(
            svg,
            r#"<text x="16" y="{:.1}" font-size="12" transform="rotate(-90 16 {:.1})" text-anchor="middle">{}</text>"#,
            f64::midpoint(y0, y1),
            f64::midpoint(y0, y1),
            escape(y_label)
        );
    }

    fn x_tick(&self, svg: &mut String, x: f64, label: &str) {
        let (px, y0) = (self.x(x), self.y(self.y_min));
        let _ = write!(
            svg,
            r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{y0:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"##,
            self.y(self.y_max),
            y0 + 16.0,
            escape(label)
        );
    }

    fn polyline(&self, svg: &mut String, points: &[(f64, f64)], color: &str, name: &str) {
        let mut coordinates = String::new();
        for (x, y) in points {
            let _ = write!(coordinates, "{:.1},{:.1} ", self.x(*x), self.y(*y));
        }
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"><title>{}</title></polyline>"#,
            coordinates.trim_end(),
            escape(name)
        );
    }

    fn legend(svg: &mut String, index: usize, color: &str, name: &str) {
        #[expect(clippy::cast_precision_loss, reason = "a handful of series")]
        let y = TOP + 14.0 + 18.0 * index as f64;
        let x = WIDTH - RIGHT + 14.0;
        let _ = write!(
            svg,
            r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            x + 18.0,
            x + 24.0,
            y + 4.0,
            escape(name)
        );
    }
}

fn svg_open(title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" role="img" aria-label="{}">"#,
        escape(title)
    )
}

/// Latency by percentile, one line per series, x on `HdrHistogram`'s `1 / (1 - p)` log scale.
fn percentile_svg(series: &[(String, Vec<(f64, f64)>)], samples_max: u64) -> String {
    // Decades of the x axis: enough to reach the rarest sample (1 in `samples_max`).
    let mut decades = DECADES_MIN;
    while decades < DECADES_MAX && 10u64.pow(decades) < samples_max {
        decades += 1;
    }
    // A log axis: the RPCs and the instances differ by orders of magnitude. 1 µs is the
    // histograms' floor.
    let values = || {
        series
            .iter()
            .flat_map(|(_, points)| points.iter().map(|(_, ms)| *ms))
    };
    let low = values().fold(f64::INFINITY, f64::min).max(0.001);
    let high = values().fold(0.0, f64::max).max(low * 10.0);
    let frame = Frame {
        x_max: f64::from(decades),
        y_min: 10f64.powf(low.log10().floor()),
        y_max: 10f64.powf(high.log10().ceil()),
        y_log: true,
    };
    let mut svg = svg_open("latency by percentile");
    frame.axes(&mut svg, "latency (ms, log scale)");
    for decade in 0..=decades {
        frame.x_tick(&mut svg, f64::from(decade), &percentile_label(decade));
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">percentile</text>"#,
        frame.x(frame.x_max / 2.0),
        HEIGHT - 10.0
    );
    for (index, (name, points)) in series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let points: Vec<(f64, f64)> = points
            .iter()
            .map(|(quantile, ms)| (percentile_x(*quantile, decades), *ms))
            .collect();
        frame.polyline(&mut svg, &points, color, name);
        Frame::legend(&mut svg, index, color, name);
    }
    svg.push_str("</svg>");
    svg
}

/// Created and completed instances in each second of the run; the warm-up shaded, the end of
/// the window marked.
fn throughput_svg(created: &[u64], completed: &[u64], warmup_s: f64, window_end_s: f64) -> String {
    let seconds = created.len().max(completed.len()).max(1);
    #[expect(
        clippy::cast_precision_loss,
        reason = "seconds and counts far below 2^52"
    )]
    let (x_max, y_max) = (
        (seconds as f64).max(window_end_s),
        nice_ceiling(created.iter().chain(completed).copied().max().unwrap_or(0) as f64),
    );
    let frame = Frame {
        x_max,
        y_min: 0.0,
        y_max,
        y_log: false,
    };
    let mut svg = svg_open("instances per second");
    frame.axes(&mut svg, "instances per second");
    let (warmup_x, top, bottom) = (frame.x(warmup_s), frame.y(y_max), frame.y(0.0));
    let _ = write!(
        svg,
        r##"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="#f3f3f3"><title>warm-up</title></rect>"##,
        frame.x(0.0),
        warmup_x - frame.x(0.0),
        bottom - top
    );
    let end_x = frame.x(window_end_s);
    let _ = write!(
        svg,
        r##"<line x1="{end_x:.1}" y1="{top:.1}" x2="{end_x:.1}" y2="{bottom:.1}" stroke="#999" stroke-dasharray="4 3"><title>end of the measured window</title></line>"##
    );
    let step = nice_ceiling(x_max / 10.0).max(1.0);
    let mut tick = 0.0;
    while tick <= x_max + 1e-9 {
        frame.x_tick(&mut svg, tick, &format!("{tick:.0}"));
        tick += step;
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">seconds since the start (shaded: warm-up)</text>"#,
        frame.x(x_max / 2.0),
        HEIGHT - 10.0
    );
    for (index, (name, counts)) in [("created", created), ("completed", completed)]
        .into_iter()
        .enumerate()
    {
        // Each second's count drawn at the second's middle.
        #[expect(
            clippy::cast_precision_loss,
            reason = "seconds and counts far below 2^52"
        )]
        let points: Vec<(f64, f64)> = counts
            .iter()
            .enumerate()
            .map(|(second, count)| (second as f64 + 0.5, *count as f64))
            .collect();
        let color = COLORS[index % COLORS.len()];
        frame.polyline(&mut svg, &points, color, name);
        Frame::legend(&mut svg, index, color, &format!("{name}/s"));
    }
    svg.push_str("</svg>");
    svg
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = u32::try_from(day_of_year - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn utc_text(at: SystemTime) -> String {
    let seconds = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(0));
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let in_day = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

/// The HTML report of a run that ended at `finished_at`.
///
/// # Panics
///
/// Never: the summary and plotted points always serialize.
#[must_use]
#[expect(
    clippy::too_many_lines,
    reason = "the page from top to bottom, in the order it reads"
)]
pub fn html(summary: &Summary, measurements: &Measurements, finished_at: SystemTime) -> String {
    let series: Vec<(String, Vec<(f64, f64)>)> = series_histograms(measurements, summary.activate)
        .into_iter()
        .map(|(name, histogram)| (name, percentile_points(histogram)))
        .collect();
    let samples_max = series_histograms(measurements, summary.activate)
        .iter()
        .map(|(_, histogram)| histogram.len())
        .max()
        .unwrap_or(0);
    let warmup_s = measurements.warmup.as_secs_f64();
    let window_end_s = warmup_s + measurements.window.as_secs_f64();
    let data = serde_json::json!({
        "summary": summary,
        "percentiles": series
            .iter()
            .map(|(name, points)| (name.clone(), points.clone()))
            .collect::<BTreeMap<_, _>>(),
        "per_second": {
            "created": measurements.created_per_second,
            "completed": measurements.completed_per_second,
        },
    });
    // Inside <script>, "</" would end the element.
    let data = data.to_string().replace("</", "<\\/");

    let mut page = String::new();
    let title = format!("sluice-bench gateway, {}", utc_text(finished_at));
    let _ = write!(
        page,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th:first-child, td:first-child, table.run td {{ text-align: left; }}
svg {{ display: block; margin: 1em 0; max-width: 100%; height: auto; }}
</style></head><body>
<h1>{title}</h1>
"#,
        title = escape(&title)
    );
    let parameters = [
        ("gateway", summary.gateway.clone()),
        ("job activation", summary.activate.to_owned()),
        (
            "rate",
            if summary.rate == 0 {
                format!(
                    "as fast as possible, {} instances in flight",
                    summary.in_flight
                )
            } else {
                format!(
                    "{} instances/s (latency from the scheduled start)",
                    summary.rate
                )
            },
        ),
        ("workers", summary.workers.to_string()),
        ("measured", format!("{} s", summary.duration_s)),
        ("warm-up", format!("{} s (not counted)", summary.warmup_s)),
        (
            "process",
            format!(
                "{} (start → service task {} → end)",
                super::workload::BPMN_PROCESS_ID,
                super::workload::JOB_TYPE
            ),
        ),
    ];
    page.push_str("<h2>Run</h2>\n<table class=\"run\">\n");
    for (name, value) in parameters {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(name),
            escape(&value)
        );
    }
    page.push_str("</table>\n<h2>Summary</h2>\n<table>\n<tr>");
    for column in TABLE_COLUMNS {
        let _ = write!(page, "<th>{}</th>", escape(column));
    }
    page.push_str("</tr>\n");
    for row in &summary.series {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            escape(&row.name),
            row.count,
            row.p50_ms,
            row.p90_ms,
            row.p99_ms,
            row.p999_ms,
            row.max_ms
        );
    }
    let _ = write!(
        page,
        "</table>\n<p>{}</p>\n<p>{}</p>\n",
        escape(&summary.throughput_line()),
        escape(&summary.errors_line())
    );
    let _ = write!(
        page,
        "<p>Instance latency: from the creation's send (or, with a rate, its scheduled \
         start) to the answer of the CompleteJob that ended it. Instances started in the \
         warm-up are not counted.</p>\n<h2>Latency by percentile</h2>\n{}\n\
         <h2>Throughput</h2>\n{}\n",
        percentile_svg(&series, samples_max),
        throughput_svg(
            &measurements.created_per_second,
            &measurements.completed_per_second,
            warmup_s,
            window_end_s
        )
    );
    let _ = write!(
        page,
        "<script type=\"application/json\" id=\"sluice-bench-data\">{data}</script>\n</body></html>\n"
    );
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tracker::{Rpc, Tracker};
    use std::time::{Duration, Instant};

    fn measurements() -> Measurements {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut tracker = Tracker::new(t0, t0 + 1000 * ms, 2000 * ms);
        for key in 0..500i64 {
            let offset = u32::try_from(key).expect("small");
            let started = t0 + 1000 * ms + offset * 3 * ms;
            tracker.handle_created(key, started, started + ms);
            tracker.handle_job_received(key, started + 2 * ms);
            tracker.handle_rpc(Rpc::CreateProcessInstance, ms);
            tracker.handle_rpc(Rpc::CompleteJob, 2 * ms);
            tracker.handle_completed(key, started + (3 + offset % 40) * ms);
        }
        tracker.handle_error(Rpc::CreateProcessInstance, "RESOURCE_EXHAUSTED");
        tracker.finish(t0 + 3000 * ms)
    }

    fn args() -> GatewayArgs {
        GatewayArgs {
            gateway: "127.0.0.1:29900".to_owned(),
            report: "/tmp/</script>.html".into(),
            ..GatewayArgs::default()
        }
    }

    #[test]
    fn summary_has_the_json_keys_and_ordered_percentiles() {
        let measurements = measurements();
        let summary = Summary::new(&args(), &measurements);
        assert_eq!(summary.created, 500);
        assert_eq!(summary.completed, 500);
        assert!(summary.pi_per_s > 200.0, "{summary:?}");
        assert!(summary.pi_p50_ms <= summary.pi_p99_ms && summary.pi_p99_ms <= summary.pi_p999_ms);
        assert!(summary.pi_p999_ms <= summary.pi_max_ms);
        let names: Vec<&str> = summary.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "instance",
                "job push delay",
                "CreateProcessInstance",
                "CompleteJob"
            ]
        );
        let json = serde_json::to_value(&summary).expect("serialize");
        for key in [
            "pi_per_s",
            "pi_p50_ms",
            "pi_p99_ms",
            "pi_p999_ms",
            "errors",
            "rate",
            "workers",
            "duration_s",
            "created",
            "completed",
            "report",
            "series",
            "errors_by_code",
        ] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
        assert_eq!(json["errors"], 1);
        assert_eq!(json["errors_by_code"]["RESOURCE_EXHAUSTED"], 1);

        let mut table = Vec::new();
        write_table(&summary, &mut table).expect("write");
        let table = String::from_utf8(table).expect("utf-8");
        assert!(table.contains("p99.9 ms"), "{table}");
        assert!(
            table.contains("CreateProcessInstance RESOURCE_EXHAUSTED 1"),
            "{table}"
        );
        assert!(table.contains("report: /tmp/</script>.html"), "{table}");
    }

    #[test]
    fn the_html_report_is_self_contained() {
        let measurements = measurements();
        let summary = Summary::new(&args(), &measurements);
        let page = html(
            &summary,
            &measurements,
            UNIX_EPOCH + Duration::from_hours(24 * 365),
        );
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(
            page.contains("sluice-bench gateway, 1971-01-01 00:00:00 UTC"),
            "{}",
            &page[..300]
        );
        assert_eq!(page.matches("<svg ").count(), 2);
        assert!(page.matches("<polyline").count() >= 6);
        assert!(page.contains("99.9%") && page.contains("90%"));
        assert!(page.contains(r#"id="sluice-bench-data""#));
        // The report path's "</script>" cannot end the JSON data's element.
        assert_eq!(page.matches("</script>").count(), 1);
        assert_eq!(escape(r#"<a & "b">"#), "&lt;a &amp; &quot;b&quot;&gt;");
        let lower = page.to_lowercase();
        for external in ["src=", "href=", "@import", "url("] {
            assert!(!lower.contains(external), "{external} in the report");
        }
        assert!(page.contains("127.0.0.1:29900") && page.contains("CompleteJob"));
        let marker = r#"id="sluice-bench-data">"#;
        let start = page.find(marker).expect("data") + marker.len();
        let end = start + page[start..].find("</script>").expect("end");
        let data: serde_json::Value =
            serde_json::from_str(&page[start..end]).expect("data is JSON");
        assert_eq!(data["summary"]["completed"], 500);
        assert!(
            data["percentiles"]["instance"]
                .as_array()
                .is_some_and(|p| p.len() > 10)
        );
    }

    #[test]
    fn axis_helpers() {
        assert!((nice_ceiling(0.0) - 1.0).abs() < 1e-12);
        assert!((nice_ceiling(3.2) - 5.0).abs() < 1e-12);
        assert!((nice_ceiling(0.7) - 1.0).abs() < 1e-12);
        assert!((nice_ceiling(200.0) - 200.0).abs() < 1e-9);
        assert!((nice_ceiling(201.0) - 500.0).abs() < 1e-9);
        assert_eq!(
            (0..=4).map(percentile_label).collect::<Vec<_>>(),
            ["0%", "90%", "99%", "99.9%", "99.99%"]
        );
        assert!((percentile_x(0.0, 3) - 0.0).abs() < 1e-12);
        assert!((percentile_x(0.99, 3) - 2.0).abs() < 1e-9);
        assert!((percentile_x(1.0, 3) - 3.0).abs() < 1e-12);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_427), (2025, 12, 5));
        assert_eq!(
            utc_text(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661)),
            "2000-02-29 01:01:01 UTC"
        );
    }
}
