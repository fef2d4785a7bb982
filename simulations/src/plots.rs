//! SVG plots of a simulation run: latency CDF, delivery ratio over time, bytes per node.
//!
//! Each plot is drawn with plotters' SVG backend into a string and then written to disk, so
//! drawing failures and I/O failures stay apart. Labels become SVG `<text>` elements whose size
//! plotters only estimates, so no font is loaded and no font feature is needed. Non-finite
//! values (and negative latencies) are skipped; a plot with nothing to show is still written,
//! with "no data" ("no deliveries" for the latency CDF) in its caption.

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

/// Width and height of every plot, in pixels.
const SIZE: (u32, u32) = (900, 540);
/// Most points drawn per CDF line; larger sample sets are thinned evenly by rank.
const MAX_CDF_POINTS: usize = 2_000;
/// The latency axis is logarithmic when the largest latency exceeds the smallest by more.
const LOG_SCALE_RATIO: f64 = 100.0;
const FONT: &str = "sans-serif";

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// Everything the plots need, already computed.
#[derive(Debug, Clone, Default)]
pub(crate) struct PlotData {
    /// Per message kind (e.g. "direct_online", "direct_mailbox", "group"): every delivery
    /// latency in milliseconds (unsorted).
    pub latencies_ms: Vec<(String, Vec<f64>)>,
    /// Per message kind: points (seconds since the workload started, delivery ratio 0..=1 of
    /// the messages sent in that time bucket).
    pub delivery_over_time: Vec<(String, Vec<(f64, f64)>)>,
    /// Per node: (node label, bytes sent, bytes received). Any order.
    pub bytes_per_node: Vec<(String, u64, u64)>,
    /// Scenario name and seed, for the titles.
    pub title: String,
}

/// A plot could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlotError {
    /// plotters failed while drawing (its error type is generic, so it is kept as text).
    #[error("cannot draw {}: {message}", path.display())]
    Draw { path: PathBuf, message: String },
    /// The output directory or file could not be written; the cause is `source`.
    #[error("cannot write {}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Writes latency_cdf.svg, delivery_over_time.svg, bytes_per_node.svg into `dir` (created if
/// missing); returns the paths written.
pub(crate) fn write_plots(dir: &Path, data: &PlotData) -> Result<Vec<PathBuf>, PlotError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| PlotError::Io { path: dir.to_path_buf(), source })?;
    Ok(vec![
        render(dir, "latency_cdf.svg", |area| latency_cdf(area, data))?,
        render(dir, "delivery_over_time.svg", |area| delivery_over_time(area, data))?,
        render(dir, "bytes_per_node.svg", |area| bytes_per_node(area, data))?,
    ])
}

/// Draws one plot on a white canvas and writes it to `dir/name`.
fn render(
    dir: &Path,
    name: &str,
    draw: impl FnOnce(&Area<'_>) -> DrawResult,
) -> Result<PathBuf, PlotError> {
    let path = dir.join(name);
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        area.fill(&WHITE)
            .and_then(|()| draw(&area))
            .and_then(|()| area.present())
            .map_err(|e| PlotError::Draw { path: path.clone(), message: e.to_string() })?;
    }
    std::fs::write(&path, svg).map_err(|source| PlotError::Io { path: path.clone(), source })?;
    Ok(path)
}

/// One CDF line per kind with samples; log latency axis when the spread is wide.
fn latency_cdf(area: &Area<'_>, data: &PlotData) -> DrawResult {
    let kinds: Vec<(&str, Vec<f64>)> = data
        .latencies_ms
        .iter()
        .filter_map(|(kind, samples)| {
            let mut sorted: Vec<f64> =
                samples.iter().copied().filter(|v| v.is_finite() && *v >= 0.0).collect();
            sorted.sort_by(f64::total_cmp);
            (!sorted.is_empty()).then_some((kind.as_str(), sorted))
        })
        .collect();
    let max = kinds.iter().filter_map(|(_, s)| s.last()).fold(0.0, |a: f64, &b| a.max(b));
    let min_positive = kinds
        .iter()
        .filter_map(|(_, s)| s.iter().find(|v| **v > 0.0))
        .fold(f64::INFINITY, |a, &b| a.min(b));
    let none = if kinds.is_empty() { " (no deliveries)" } else { "" };
    let caption = format!("{}: latency CDF{none}", data.title);
    if min_positive.is_finite() && max / min_positive > LOG_SCALE_RATIO {
        // Zero latencies cannot sit on a log axis; they are drawn at its left edge.
        let x = (min_positive..max).log_scale();
        cdf_chart(area, &caption, "latency (ms, log scale)", x, &kinds, min_positive)
    } else {
        let x = 0.0..if max > 0.0 { max * 1.05 } else { 1.0 };
        cdf_chart(area, &caption, "latency (ms)", x, &kinds, 0.0)
    }
}

/// Draws the CDF of each kind's sorted samples on the x axis `x`, values clamped to `floor`.
fn cdf_chart<X>(
    area: &Area<'_>,
    caption: &str,
    x_desc: &str,
    x: X,
    kinds: &[(&str, Vec<f64>)],
    floor: f64,
) -> DrawResult
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = builder(area, caption).build_cartesian_2d(x, 0.0..1.0)?;
    chart.configure_mesh().x_desc(x_desc).y_desc("fraction of deliveries").draw()?;
    for (i, (kind, samples)) in kinds.iter().enumerate() {
        let style = Palette99::pick(i).stroke_width(2);
        let n = samples.len();
        let step = n.div_ceil(MAX_CDF_POINTS).max(1);
        let start = samples.first().map(|v| (v.max(floor), 0.0));
        let ranks = samples.iter().enumerate().filter(|(r, _)| r % step == 0 || r + 1 == n);
        let points =
            start.into_iter().chain(ranks.map(|(r, v)| (v.max(floor), (r + 1) as f64 / n as f64)));
        chart
            .draw_series(LineSeries::new(points, style))?
            .label(format!("{kind} (n={n})"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    draw_legend(&mut chart, !kinds.is_empty(), SeriesLabelPosition::LowerRight)
}

/// Delivery ratio per time bucket, one line with point markers per kind.
fn delivery_over_time(area: &Area<'_>, data: &PlotData) -> DrawResult {
    let kinds: Vec<(&str, Vec<(f64, f64)>)> = data
        .delivery_over_time
        .iter()
        .filter_map(|(kind, points)| {
            let mut points: Vec<(f64, f64)> =
                points.iter().copied().filter(|(t, r)| t.is_finite() && r.is_finite()).collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (!points.is_empty()).then_some((kind.as_str(), points))
        })
        .collect();
    let times = || kinds.iter().flat_map(|(_, p)| p.iter().map(|(t, _)| *t));
    let (t_min, t_max) = (times().fold(0.0, f64::min), times().fold(0.0, f64::max));
    let t_max = if t_max > t_min { t_max } else { t_min + 1.0 };
    let none = if kinds.is_empty() { " (no data)" } else { "" };
    let caption = format!("{}: delivery ratio over time{none}", data.title);
    let mut chart = builder(area, &caption).build_cartesian_2d(t_min..t_max, 0.0..1.05)?;
    chart
        .configure_mesh()
        .x_desc("time since workload start (s)")
        .y_desc("delivery ratio")
        .draw()?;
    for (i, (kind, points)) in kinds.iter().enumerate() {
        let style = Palette99::pick(i).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style).point_size(3))?
            .label(*kind)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    draw_legend(&mut chart, !kinds.is_empty(), SeriesLabelPosition::LowerRight)
}

/// Bytes sent and received per node, nodes ranked by bytes sent (descending). Node labels are
/// not drawn: with thousands of nodes they could not be read. Few nodes get point markers, so
/// that a single node still shows.
fn bytes_per_node(area: &Area<'_>, data: &PlotData) -> DrawResult {
    let mut nodes: Vec<(u64, u64)> = data.bytes_per_node.iter().map(|(_, s, r)| (*s, *r)).collect();
    nodes.sort_by_key(|&(sent, _)| std::cmp::Reverse(sent));
    let kib = |bytes: u64| bytes as f64 / 1024.0;
    let y_max = nodes.iter().map(|&(s, r)| kib(s.max(r))).fold(0.0, f64::max);
    let none = if nodes.is_empty() { " (no data)" } else { "" };
    let caption = format!("{}: bytes per node{none}", data.title);
    let y_top = if y_max > 0.0 { y_max * 1.05 } else { 1.0 };
    let mut chart = builder(area, &caption).build_cartesian_2d(0..nodes.len() + 1, 0.0..y_top)?;
    chart.configure_mesh().x_desc("node rank by bytes sent").y_desc("KiB").draw()?;
    // "sent" is drawn last so that the sorted line stays visible over a noisy "received".
    for (i, name) in [(1, "received"), (0, "sent")] {
        let style = Palette99::pick(i).stroke_width(2);
        let markers = if nodes.len() <= 50 { 3 } else { 0 };
        let points = nodes
            .iter()
            .enumerate()
            .map(|(rank, &(sent, received))| (rank + 1, kib(if i == 0 { sent } else { received })));
        chart
            .draw_series(LineSeries::new(points, style).point_size(markers))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    draw_legend(&mut chart, !nodes.is_empty(), SeriesLabelPosition::UpperRight)
}

/// A chart builder with the caption and the margins every plot shares.
fn builder<'a, 'b>(area: &'a Area<'b>, caption: &str) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder.caption(caption, (FONT, 20)).margin(15).x_label_area_size(40).y_label_area_size(70);
    builder
}

/// Draws the series legend, if there is anything to label.
fn draw_legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    any: bool,
    position: SeriesLabelPosition,
) -> DrawResult {
    if !any {
        return Ok(());
    }
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts the three plots were written into `dir` and look like SVG; returns the CDF's text.
    fn check(dir: &Path, data: &PlotData) -> String {
        let paths = write_plots(dir, data).unwrap();
        let names: Vec<_> = paths.iter().filter_map(|p| p.file_name()?.to_str()).collect();
        assert_eq!(names, ["latency_cdf.svg", "delivery_over_time.svg", "bytes_per_node.svg"]);
        for path in &paths {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.starts_with("<svg"), "{} is not SVG", path.display());
        }
        std::fs::read_to_string(dir.join("latency_cdf.svg")).unwrap()
    }

    #[test]
    fn writes_plots_for_small_data() {
        // The first set spans more than 100x (log axis), the second does not (linear axis).
        for (log, latencies) in
            [(true, vec![0.0, 1.5, 3.0, f64::NAN, 250.0]), (false, vec![10.0, 40.0])]
        {
            let data = PlotData {
                latencies_ms: vec![
                    ("direct_online".into(), latencies.clone()),
                    ("direct_mailbox".into(), vec![]),
                    ("group".into(), latencies.iter().map(|v| v * 2.0).collect()),
                ],
                delivery_over_time: vec![
                    ("direct_online".into(), vec![(0.0, 1.0), (10.0, 0.5), (f64::NAN, 1.0)]),
                    ("group".into(), vec![(5.0, 0.9), (0.0, 1.0)]),
                ],
                bytes_per_node: (0..3_000u64)
                    .map(|i| (format!("n{i}"), i * 700, 9_000 - i))
                    .collect(),
                title: "partition (seed 7)".into(),
            };
            let dir = tempfile::tempdir().unwrap();
            let cdf = check(dir.path(), &data);
            assert!(cdf.contains("direct_online (n=") && !cdf.contains("direct_mailbox"));
            assert_eq!(cdf.contains("log scale"), log);
        }
    }

    #[test]
    fn writes_plots_for_empty_data() {
        let dir = tempfile::tempdir().unwrap();
        let data = PlotData {
            latencies_ms: vec![("group".into(), vec![f64::NAN])],
            delivery_over_time: vec![("group".into(), vec![])],
            ..PlotData::default()
        };
        assert!(check(dir.path(), &data).contains("no deliveries"));
        assert!(check(&dir.path().join("nested"), &PlotData::default()).contains("no deliveries"));
    }
}
