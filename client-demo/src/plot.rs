//! `--plot`: each latency distribution as a percentile chart in one SVG file, a panel
//! per distribution. The x axis is logarithmic in "nines" (90%, 99%, 99.9% ...), so the
//! tail is as visible as the median. No system fonts needed: SVG text is left to the
//! browser.

use crate::report::{Latency, Report};
use plotters::prelude::*;
use std::path::Path;

const PANEL_WIDTH: u32 = 900;
const PANEL_HEIGHT: u32 = 300;

pub fn write_svg(report: &Report, path: &Path) -> anyhow::Result<()> {
    let latencies: Vec<&Latency> = report.latencies.iter().filter(|latency| latency.count > 0).collect();
    if latencies.is_empty() {
        anyhow::bail!("nothing to plot: no latency was measured");
    }
    let root =
        SVGBackend::new(path, (PANEL_WIDTH, PANEL_HEIGHT * latencies.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((latencies.len(), 1));
    for (panel, latency) in panels.iter().zip(latencies) {
        draw_panel(panel, report.scenario, latency)?;
    }
    root.present()?;
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    scenario: &str,
    latency: &Latency,
) -> anyhow::Result<()> {
    let x_max = (latency.count as f64).log10().ceil().clamp(1.0, 6.0);
    let points: Vec<(f64, f64)> = latency
        .distribution
        .iter()
        .map(|&[percentile, ms]| (nines(percentile / 100.0).min(x_max), ms))
        .collect();
    let y_max = (latency.max_ms * 1.1).max(0.001);
    let caption = format!(
        "{scenario}: {} (n={}; p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms)",
        latency.name, latency.count, latency.p50_ms, latency.p99_ms, latency.max_ms
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        // Room for the last percentile label, centred on the right edge.
        .margin_right(36)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| milliseconds_label(*y, y_max))
        .draw()?;
    chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?;
    Ok(())
}

/// Fewer decimals as the scale grows: `1200`, `25.5`, `0.125`.
fn milliseconds_label(y: f64, y_max: f64) -> String {
    match y_max {
        m if m >= 100.0 => format!("{y:.0}"),
        m if m >= 10.0 => format!("{y:.1}"),
        _ => format!("{y:.3}"),
    }
}

/// 0.9 → 1, 0.99 → 2, 0.999 → 3; the whole distribution (1.0) is infinitely far.
fn nines(quantile: f64) -> f64 {
    if quantile >= 1.0 { f64::INFINITY } else { -(1.0 - quantile).log10() }
}

/// The percentile at `x` nines: 0 → "0%", 1 → "90%", 2.3 → "99.5%", 3 → "99.9%".
fn percentile_label(x: f64) -> String {
    let percentile = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x.ceil() as usize).saturating_sub(2);
    format!("{percentile:.decimals$}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_counts_nines() {
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(nines(1.0), f64::INFINITY);
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(4.0), "99.99%");
    }
}
