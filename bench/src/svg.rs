//! Line and bar charts written as SVG by hand.
//!
//! The report needs a handful of charts: medians joined by lines or drawn as bars, each
//! with a whisker from the min to the max run, on linear or log axes. That is a few
//! hundred lines here against a plotting crate and its font stack in the build, and the
//! output is plain text that diffs and renders in any browser or on GitHub.

use std::fmt::Write;

use crate::stats::Summary;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 74.0;
const BOTTOM: f64 = 58.0;
/// Colours that stay apart for the colour-blind (Okabe and Ito's palette).
const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

/// How an axis maps values to positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    /// Evenly spaced values, from zero.
    Linear,
    /// Evenly spaced powers of ten; for figures that span orders of magnitude.
    Log,
}

/// One line: points `(x, y over runs)`, drawn in x order.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// The legend's name for it.
    pub(crate) name: String,
    /// The points.
    pub(crate) points: Vec<(f64, Summary)>,
}

/// A chart of lines with min-max whiskers.
#[derive(Debug, Clone)]
pub(crate) struct LineChart {
    /// Drawn at the top.
    pub(crate) title: String,
    /// Under the x axis.
    pub(crate) x_label: String,
    /// Beside the y axis.
    pub(crate) y_label: String,
    /// The x axis' scale.
    pub(crate) x_scale: Scale,
    /// The y axis' scale.
    pub(crate) y_scale: Scale,
    /// The lines.
    pub(crate) series: Vec<Series>,
    /// A dashed horizontal line at a value, with its label (a target).
    pub(crate) reference: Option<(f64, String)>,
}

/// One set of bars, one bar per category (or none where the value is missing).
#[derive(Debug, Clone)]
pub(crate) struct BarSeries {
    /// The legend's name for it.
    pub(crate) name: String,
    /// One value per category of the chart.
    pub(crate) values: Vec<Option<Summary>>,
}

/// A chart of grouped bars with min-max whiskers.
#[derive(Debug, Clone)]
pub(crate) struct BarChart {
    /// Drawn at the top.
    pub(crate) title: String,
    /// Beside the y axis.
    pub(crate) y_label: String,
    /// The y axis' scale.
    pub(crate) y_scale: Scale,
    /// The groups along the x axis.
    pub(crate) categories: Vec<String>,
    /// The bars of each group, in legend order.
    pub(crate) series: Vec<BarSeries>,
}

/// A fitted axis: its scale and the data range it shows.
#[derive(Debug, Clone, Copy)]
struct Axis {
    scale: Scale,
    lo: f64,
    hi: f64,
}

impl Axis {
    /// The smallest tidy range holding `values` (non-positive values are left out of a
    /// log axis: they cannot be drawn on one).
    fn fit(scale: Scale, values: impl Iterator<Item = f64>) -> Self {
        let values: Vec<f64> = values
            .filter(|v| v.is_finite() && (scale == Scale::Linear || *v > 0.0))
            .collect();
        let max = values.iter().copied().fold(f64::MIN, f64::max);
        let min = values.iter().copied().fold(f64::MAX, f64::min);
        match scale {
            _ if values.is_empty() => Self {
                scale,
                lo: if scale == Scale::Log { 1.0 } else { 0.0 },
                hi: 10.0,
            },
            Scale::Linear => {
                let lo = if min >= 0.0 { 0.0 } else { min };
                let step = nice_step((max - lo).max(f64::MIN_POSITIVE) / 5.0);
                let hi = ((max / step).ceil() * step).max(lo + step);
                Self { scale, lo, hi }
            }
            Scale::Log => {
                let lo = 10f64.powf(min.log10().floor());
                let hi = 10f64.powf(max.log10().ceil()).max(lo * 10.0);
                Self { scale, lo, hi }
            }
        }
    }

    /// Where `value` lies between the ends: 0 at `lo`, 1 at `hi` (clamped).
    fn fraction(&self, value: f64) -> f64 {
        let f = match self.scale {
            Scale::Linear => (value - self.lo) / (self.hi - self.lo),
            Scale::Log => {
                (value.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
            }
        };
        f.clamp(0.0, 1.0)
    }

    /// The values to mark: tidy steps, or powers of ten (with 2 and 5 between them when
    /// the axis spans two decades or fewer).
    fn ticks(&self) -> Vec<f64> {
        match self.scale {
            Scale::Linear => {
                let step = nice_step((self.hi - self.lo) / 5.0);
                let count = ((self.hi - self.lo) / step).round() as usize;
                (0..=count).map(|i| self.lo + step * i as f64).collect()
            }
            Scale::Log => {
                let decades = (self.hi / self.lo).log10().round() as i32;
                let between: &[f64] = if decades <= 2 {
                    &[1.0, 2.0, 5.0]
                } else {
                    &[1.0]
                };
                let mut ticks = Vec::new();
                for decade in 0..=decades {
                    for m in between {
                        let tick = self.lo * 10f64.powi(decade) * m;
                        if tick <= self.hi * 1.000_001 {
                            ticks.push(tick);
                        }
                    }
                }
                ticks
            }
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `rough`.
fn nice_step(rough: f64) -> f64 {
    let power = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|step| *step >= rough * 0.999_999)
        .unwrap_or(10.0 * power)
}

/// A compact label: `1.5k`, `20M`, `0.25`.
pub(crate) fn short(value: f64) -> String {
    let (scaled, suffix) = match value.abs() {
        v if v >= 1e9 => (value / 1e9, "G"),
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    let digits = match scaled.abs() {
        v if v >= 100.0 || v == 0.0 => 0,
        v if v >= 10.0 => 1,
        v if v >= 1.0 => 2,
        _ => 3,
    };
    let text = format!("{scaled:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    format!("{text}{suffix}")
}

/// `text` made safe inside SVG text and attributes.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The plot area, inside the margins.
const PLOT_W: f64 = WIDTH - LEFT - RIGHT;
const PLOT_H: f64 = HEIGHT - TOP - BOTTOM;

fn y_position(axis: &Axis, value: f64) -> f64 {
    TOP + PLOT_H * (1.0 - axis.fraction(value))
}

/// The frame every chart shares: title, legend, y axis with grid lines and label.
fn open(svg: &mut String, title: &str, y_label: &str, y: &Axis, legend: &[&str]) {
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{x}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{title}</text>
"##,
        x = WIDTH / 2.0,
        title = escape(title),
    );
    // The legend runs along the top, wrapping when a row is full.
    let (mut x, mut row) = (LEFT, 0.0);
    for (i, name) in legend.iter().enumerate() {
        let width = 30.0 + 7.2 * name.chars().count() as f64;
        if x + width > WIDTH - RIGHT && x > LEFT {
            x = LEFT;
            row += 16.0;
        }
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="{}" width="14" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            40.0 + row,
            PALETTE[i % PALETTE.len()],
            x + 18.0,
            49.0 + row,
            escape(name)
        );
        x += width;
    }
    for tick in y.ticks() {
        let py = y_position(y, tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            py + 4.0,
            short(tick)
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#333333"/><line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333333"/>
<text transform="translate(18 {mid}) rotate(-90)" text-anchor="middle">{label}</text>"##,
        bottom = TOP + PLOT_H,
        right = WIDTH - RIGHT,
        mid = TOP + PLOT_H / 2.0,
        label = escape(y_label),
    );
}

/// A vertical whisker from `lo` to `hi` at `x`, with caps; nothing when they coincide.
fn whisker(svg: &mut String, x: f64, lo: f64, hi: f64, colour: &str) {
    if (lo - hi).abs() < 0.5 {
        return;
    }
    let _ = writeln!(
        svg,
        r#"<path d="M{x:.1} {lo:.1}V{hi:.1}M{:.1} {lo:.1}h8M{:.1} {hi:.1}h8" stroke="{colour}" fill="none"/>"#,
        x - 4.0,
        x - 4.0,
    );
}

impl LineChart {
    /// The chart as an SVG document.
    pub(crate) fn to_svg(&self) -> String {
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        let x = Axis::fit(self.x_scale, points().map(|(x, _)| *x));
        let reference = self.reference.iter().map(|(value, _)| *value);
        let y = Axis::fit(
            self.y_scale,
            points()
                .flat_map(|(_, s)| [s.min, s.median, s.max])
                .chain(reference),
        );
        let legend: Vec<&str> = self.series.iter().map(|s| s.name.as_str()).collect();
        let mut svg = String::new();
        open(&mut svg, &self.title, &self.y_label, &y, &legend);
        let x_position = |value: f64| LEFT + PLOT_W * x.fraction(value);
        for tick in x.ticks() {
            let px = x_position(tick);
            let _ = writeln!(
                svg,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#f0f0f0"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + PLOT_H,
                TOP + PLOT_H + 18.0,
                short(tick)
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            LEFT + PLOT_W / 2.0,
            HEIGHT - 14.0,
            escape(&self.x_label)
        );
        if let Some((value, label)) = &self.reference {
            let py = y_position(&y, *value);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{py:.1}" x2="{right}" y2="{py:.1}" stroke="#888888" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555555">{}</text>"##,
                WIDTH - RIGHT - 4.0,
                py - 5.0,
                escape(label),
                right = WIDTH - RIGHT,
            );
        }
        for (i, series) in self.series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let mut sorted = series.points.clone();
            sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
            let line: Vec<String> = sorted
                .iter()
                .map(|(px, s)| format!("{:.1},{:.1}", x_position(*px), y_position(&y, s.median)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                line.join(" ")
            );
            for (px, s) in &sorted {
                let cx = x_position(*px);
                whisker(
                    &mut svg,
                    cx,
                    y_position(&y, s.min),
                    y_position(&y, s.max),
                    colour,
                );
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{cx:.1}" cy="{:.1}" r="3.5" fill="{colour}"/>"#,
                    y_position(&y, s.median)
                );
            }
        }
        svg.push_str("</svg>\n");
        svg
    }
}

impl BarChart {
    /// The chart as an SVG document.
    pub(crate) fn to_svg(&self) -> String {
        let values = || self.series.iter().flat_map(|s| s.values.iter().flatten());
        let y = Axis::fit(self.y_scale, values().flat_map(|s| [s.min, s.max]));
        let legend: Vec<&str> = self.series.iter().map(|s| s.name.as_str()).collect();
        let mut svg = String::new();
        open(&mut svg, &self.title, &self.y_label, &y, &legend);
        let slot = PLOT_W / self.categories.len().max(1) as f64;
        let bar = slot * 0.8 / self.series.len().max(1) as f64;
        let base = TOP + PLOT_H;
        for (c, category) in self.categories.iter().enumerate() {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                LEFT + slot * (c as f64 + 0.5),
                base + 18.0,
                escape(category)
            );
            for (i, series) in self.series.iter().enumerate() {
                let Some(Some(value)) = series.values.get(c) else {
                    continue;
                };
                let colour = PALETTE[i % PALETTE.len()];
                let left = LEFT + slot * c as f64 + slot * 0.1 + bar * i as f64;
                let top = y_position(&y, value.median);
                let _ = writeln!(
                    svg,
                    r#"<rect x="{left:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{colour}"/>"#,
                    bar * 0.92,
                    (base - top).max(0.5)
                );
                let centre = left + bar * 0.46;
                whisker(
                    &mut svg,
                    centre,
                    y_position(&y, value.min),
                    y_position(&y, value.max),
                    "#333333",
                );
                let _ = writeln!(
                    svg,
                    r#"<text x="{centre:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                    y_position(&y, value.max) - 4.0,
                    short(value.median)
                );
            }
        }
        svg.push_str("</svg>\n");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(value: f64) -> Summary {
        Summary {
            median: value,
            min: value * 0.9,
            max: value * 1.1,
            runs: 3,
        }
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape(r#"a<b & "c">"#), "a&lt;b &amp; &quot;c&quot;&gt;");
    }

    #[test]
    fn labels_are_compact() {
        assert_eq!(short(1_500.0), "1.5k");
        assert_eq!(short(20_000_000.0), "20M");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(100.0), "100");
        assert_eq!(short(0.0), "0");
    }

    #[test]
    fn a_log_axis_spans_whole_decades() {
        let axis = Axis::fit(Scale::Log, [3.0, 4_000.0].into_iter());
        assert_eq!(axis.ticks(), [1.0, 10.0, 100.0, 1_000.0, 10_000.0]);
        assert!((axis.fraction(100.0) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_linear_axis_starts_at_zero_in_tidy_steps() {
        let axis = Axis::fit(Scale::Linear, [12.0, 87.0].into_iter());
        assert_eq!(axis.ticks(), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
    }

    #[test]
    fn a_line_chart_draws_one_line_per_series_and_escapes_names() {
        let chart = LineChart {
            title: "sagas <per> second".into(),
            x_label: "concurrent sagas".into(),
            y_label: "sagas/s".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Linear,
            series: vec![
                Series {
                    name: "memory".into(),
                    points: vec![(1.0, at(10.0)), (100.0, at(50.0))],
                },
                Series {
                    name: "sqlite & fsync".into(),
                    points: vec![(1.0, at(1.0)), (100.0, at(5.0))],
                },
            ],
            reference: Some((20.0, "target".into())),
        };
        let svg = chart.to_svg();
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 4);
        assert_eq!(svg.matches("stroke-dasharray").count(), 1);
        assert!(svg.contains("sagas &lt;per&gt; second") && svg.contains("sqlite &amp; fsync"));
    }

    #[test]
    fn a_bar_chart_skips_missing_values() {
        let chart = BarChart {
            title: "transitions".into(),
            y_label: "ns per event".into(),
            y_scale: Scale::Log,
            categories: vec!["traffic light".into(), "counter".into()],
            series: vec![
                BarSeries {
                    name: "keel".into(),
                    values: vec![Some(at(40.0)), Some(at(5.0))],
                },
                BarSeries {
                    name: "xstate".into(),
                    values: vec![Some(at(40_000.0)), None],
                },
            ],
        };
        let svg = chart.to_svg();
        // The background and two legend swatches are rects too.
        assert_eq!(svg.matches("<rect").count(), 1 + 2 + 3);
    }
}
