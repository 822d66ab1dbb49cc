//! A small SVG line chart: enough for the plots of BENCHMARKS.md (latency
//! distributions, throughput against clients, cost against active seats),
//! without a plotting crate's compile time.

use std::fmt::Write as _;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 210.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// How an axis maps values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Powers of ten; values at or below zero are left out.
    Log,
}

#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub y_scale: Scale,
    pub series: Vec<Series>,
}

struct Axis {
    scale: Scale,
    low: f64,
    high: f64,
}

impl Axis {
    fn fit(scale: Scale, values: impl Iterator<Item = f64>) -> Axis {
        let mut low = f64::INFINITY;
        let mut high = f64::NEG_INFINITY;
        for v in values.filter(|v| v.is_finite() && (scale == Scale::Linear || *v > 0.0)) {
            low = low.min(v);
            high = high.max(v);
        }
        if !low.is_finite() {
            (low, high) = (0.0, 1.0);
        }
        match scale {
            Scale::Linear => {
                let low = low.min(0.0);
                let high = if high > low { high * 1.05 } else { low + 1.0 };
                Axis { scale, low, high }
            }
            Scale::Log => {
                let low = 10f64.powf(low.log10().floor());
                let mut high = 10f64.powf(high.log10().ceil());
                if high <= low {
                    high = low * 10.0;
                }
                Axis { scale, low, high }
            }
        }
    }

    /// Where `v` falls, from 0 (low) to 1 (high).
    fn fraction(&self, v: f64) -> Option<f64> {
        match self.scale {
            Scale::Linear => Some((v - self.low) / (self.high - self.low)),
            Scale::Log if v > 0.0 => {
                Some((v.log10() - self.low.log10()) / (self.high.log10() - self.low.log10()))
            }
            Scale::Log => None,
        }
    }

    fn ticks(&self) -> Vec<f64> {
        match self.scale {
            Scale::Linear => (0..=5)
                .map(|i| self.low + (self.high - self.low) * f64::from(i) / 5.0)
                .collect(),
            Scale::Log => {
                let mut ticks = Vec::new();
                let mut v = self.low;
                while v <= self.high * 1.0001 {
                    ticks.push(v);
                    v *= 10.0;
                }
                ticks
            }
        }
    }
}

fn label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Chart {
    pub fn to_svg(&self) -> String {
        let x = Axis::fit(
            self.x_scale,
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.0)),
        );
        let y = Axis::fit(
            self.y_scale,
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1)),
        );
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let px = |v: f64| x.fraction(v).map(|f| LEFT + f * plot_w);
        let py = |v: f64| y.fraction(v).map(|f| TOP + plot_h - f * plot_h);
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            escape(&self.title)
        );
        for tick in x.ticks() {
            if let Some(at) = px(tick) {
                let _ = writeln!(
                    out,
                    r##"<line x1="{at:.1}" y1="{TOP}" x2="{at:.1}" y2="{:.1}" stroke="#ddd"/><text x="{at:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                    TOP + plot_h,
                    TOP + plot_h + 16.0,
                    label(tick)
                );
            }
        }
        for tick in y.ticks() {
            if let Some(at) = py(tick) {
                let _ = writeln!(
                    out,
                    r##"<line x1="{LEFT}" y1="{at:.1}" x2="{:.1}" y2="{at:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                    LEFT + plot_w,
                    LEFT - 6.0,
                    at + 4.0,
                    label(tick)
                );
            }
        }
        let _ = writeln!(
            out,
            r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            HEIGHT - 18.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            out,
            r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + plot_h / 2.0,
            escape(&self.y_label)
        );
        for (index, series) in self.series.iter().enumerate() {
            let colour = COLOURS[index % COLOURS.len()];
            let points: Vec<String> = series
                .points
                .iter()
                .filter_map(|&(a, b)| Some(format!("{:.1},{:.1}", px(a)?, py(b)?)))
                .collect();
            if points.len() > 1 {
                let _ = writeln!(
                    out,
                    r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                    points.join(" ")
                );
            }
            for point in &points {
                let (cx, cy) = point.split_once(',').expect("formatted above");
                let _ = writeln!(
                    out,
                    r#"<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>"#
                );
            }
            let legend_y = TOP + 10.0 + 18.0 * index as f64;
            let legend_x = LEFT + plot_w + 14.0;
            let _ = writeln!(
                out,
                r#"<line x1="{legend_x}" y1="{legend_y}" x2="{:.1}" y2="{legend_y}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                legend_x + 18.0,
                legend_x + 24.0,
                legend_y + 4.0,
                escape(&series.name)
            );
        }
        out.push_str("</svg>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_every_series_and_its_points() {
        let chart = Chart {
            title: "a <b>".into(),
            x_label: "seats".into(),
            y_label: "µs".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Linear,
            series: vec![
                Series {
                    name: "one".into(),
                    points: vec![(1.0, 5.0), (10.0, 6.0), (1e6, 7.0), (0.0, 1.0)],
                },
                Series {
                    name: "two".into(),
                    points: vec![(100.0, 2.0)],
                },
            ],
        };
        let svg = chart.to_svg();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt;"));
        assert_eq!(
            svg.matches("<polyline").count(),
            1,
            "one point draws no line"
        );
        assert_eq!(
            svg.matches("<circle").count(),
            4,
            "zero is left out on a log axis"
        );
        assert!(svg.contains(">1M<"), "decade ticks up to a million");
    }
}
