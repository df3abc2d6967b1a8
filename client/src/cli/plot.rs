//! A small hand-written SVG chart: p50 and p99 latency against throughput,
//! one labelled point per run.

/// One run on the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotPoint {
    /// Shown next to the point (e.g. `c=4`).
    pub label: String,
    /// x: inferences per second.
    pub throughput: f64,
    /// y of the first line, µs.
    pub p50: f64,
    /// y of the second line, µs.
    pub p99: f64,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const TICKS: f64 = 5.0;

/// Picks one coordinate of a point.
type Value = fn(&PlotPoint) -> f64;

/// A round tick step (1, 2 or 5 × 10^k) that splits `max` into about five.
fn tick_step(max: f64) -> f64 {
    let raw = if max > 0.0 && max.is_finite() {
        max / TICKS
    } else {
        1.0 / TICKS
    };
    let magnitude = 10f64.powf(raw.log10().floor());
    let f = raw / magnitude;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Formats a tick value without trailing noise (`0.5`, `2000`).
fn tick_label(v: f64) -> String {
    let rounded = (v * 1000.0).round() / 1000.0;
    format!("{rounded}")
}

/// The chart as a standalone SVG document.
pub fn latency_svg(title: &str, points: &[PlotPoint]) -> String {
    let max_of = |f: Value| points.iter().map(f).fold(0.0, f64::max);
    let (x_step, y_step) = (
        tick_step(max_of(|p| p.throughput)),
        tick_step(max_of(|p| p.p99.max(p.p50))),
    );
    let x_max = (max_of(|p| p.throughput) / x_step).ceil().max(1.0) * x_step;
    let y_max = (max_of(|p| p.p99.max(p.p50)) / y_step).ceil().max(1.0) * y_step;
    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |v: f64| LEFT + v / x_max * pw;
    let y = |v: f64| TOP + ph - v / y_max * ph;

    let mut svg = String::new();
    let mut w = |s: String| svg.push_str(&s);
    w(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    ));
    w("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n".into());
    w(format!(
        "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        WIDTH / 2.0,
        escape(title)
    ));
    // Grid, ticks and tick labels.
    for i in 0..=(x_max / x_step).round() as usize {
        let v = i as f64 * x_step;
        let (px, bottom) = (x(v), TOP + ph);
        w(format!(
            "<line x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{bottom}\" stroke=\"#e5e5e5\"/>\n"
        ));
        w(format!(
            "<text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            bottom + 18.0,
            tick_label(v)
        ));
    }
    for i in 0..=(y_max / y_step).round() as usize {
        let v = i as f64 * y_step;
        let py = y(v);
        w(format!(
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#e5e5e5\"/>\n",
            LEFT + pw
        ));
        w(format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            LEFT - 8.0,
            py + 4.0,
            tick_label(v)
        ));
    }
    // Axes and their titles.
    w(format!(
        "<path d=\"M{LEFT} {TOP} V{:.1} H{:.1}\" fill=\"none\" stroke=\"black\"/>\n",
        TOP + ph,
        LEFT + pw
    ));
    w(format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">throughput (infer/sec)</text>\n",
        LEFT + pw / 2.0,
        HEIGHT - 15.0
    ));
    w(format!(
        "<text x=\"20\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 20 {:.1})\">latency (usec)</text>\n",
        TOP + ph / 2.0,
        TOP + ph / 2.0
    ));
    // The two lines, their points, the labels and a legend.
    let series: [(&str, &str, Value); 2] = [("p50", "#1f77b4", |p| p.p50), ("p99", "#d62728", |p| p.p99)];
    for (n, (name, color, value)) in series.iter().enumerate() {
        let coords: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.throughput), y(value(p))))
            .collect();
        w(format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
            coords.join(" ")
        ));
        for p in points {
            w(format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{color}\"/>\n",
                x(p.throughput),
                y(value(p))
            ));
        }
        let ly = TOP + 8.0 + 18.0 * n as f64;
        let lx = LEFT + 15.0;
        w(format!(
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"/>\n",
            lx + 20.0
        ));
        w(format!("<text x=\"{}\" y=\"{}\">{name}</text>\n", lx + 26.0, ly + 4.0));
    }
    for p in points {
        w(format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">{}</text>\n",
            x(p.throughput),
            y(p.p99) - 8.0,
            escape(&p.label)
        ));
    }
    w("</svg>\n".into());
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points() -> Vec<PlotPoint> {
        (1..=4)
            .map(|c| PlotPoint {
                label: format!("c={c}"),
                throughput: 900.0 * c as f64,
                p50: 400.0 + 50.0 * c as f64,
                p99: 900.0 + 300.0 * c as f64,
            })
            .collect()
    }

    /// The numbers of every `points="..."` attribute, as (x, y) pairs.
    fn polylines(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.lines()
            .filter(|l| l.starts_with("<polyline"))
            .map(|l| {
                let start = l.find("points=\"").unwrap() + 8;
                let end = start + l[start..].find('"').unwrap();
                l[start..end]
                    .split(' ')
                    .map(|pair| {
                        let (a, b) = pair.split_once(',').unwrap();
                        (a.parse().unwrap(), b.parse().unwrap())
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_chart_is_a_well_formed_document_with_every_point() {
        let svg = latency_svg("simple (grpc) & more", &points());
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert!(svg.contains("simple (grpc) &amp; more"));
        let lines = polylines(&svg);
        assert_eq!(lines.len(), 2);
        for line in &lines {
            assert_eq!(line.len(), 4);
            // Inside the plot area, left to right as throughput grows.
            assert!(
                line.iter()
                    .all(|&(x, y)| (LEFT..=WIDTH - RIGHT).contains(&x) && (TOP..=HEIGHT - BOTTOM).contains(&y))
            );
            assert!(line.windows(2).all(|w| w[0].0 < w[1].0));
        }
        // p99 above p50 on screen: smaller y.
        assert!(lines[1].iter().zip(&lines[0]).all(|(p99, p50)| p99.1 < p50.1));
        for c in 1..=4 {
            assert!(svg.contains(&format!(">c={c}</text>")));
        }
        // Every element is closed: self-closing, or a text element.
        for line in svg.lines().skip(1).filter(|l| *l != "</svg>") {
            assert!(line.ends_with("/>") || line.ends_with("</text>"), "{line}");
        }
    }

    #[test]
    fn ticks_are_round_and_empty_charts_still_render() {
        assert_eq!(tick_step(3600.0), 1000.0);
        assert_eq!(tick_step(900.0), 200.0);
        assert_eq!(tick_step(0.4), 0.1);
        assert_eq!(tick_label(0.30000000000000004), "0.3");
        let svg = latency_svg("none", &[]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(!svg.contains("NaN"));
        let one = latency_svg("one", &points()[..1]);
        assert_eq!(polylines(&one).iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
    }
}
