//! The research report: one self-contained HTML file with tables and SVG plots (plotters).

use plotters::prelude::*;

use super::metrics::{pr_curve, roc_curve, Scored};

const W: u32 = 460;
const H: u32 = 340;

fn svg(
    draw: impl FnOnce(DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<(), String>,
) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (W, H)).into_drawing_area();
        if let Err(e) = root
            .fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|_| draw(root.clone()))
        {
            return format!("<p>plot failed: {}</p>", html_escape(&e));
        }
        let _ = root.present();
    }
    out
}

fn curve(title: &str, x_desc: &str, y_desc: &str, pts: &[(f64, f64)], diagonal: bool) -> String {
    svg(|root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(|e| e.to_string())?;
        if diagonal {
            chart
                .draw_series(LineSeries::new(
                    [(0.0, 0.0), (1.0, 1.0)],
                    &RGBColor(180, 180, 180),
                ))
                .map_err(|e| e.to_string())?;
        }
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), BLUE.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

pub fn roc_svg(rows: &[Scored]) -> String {
    curve(
        "ROC",
        "false-positive rate",
        "true-positive rate",
        &roc_curve(rows),
        true,
    )
}

pub fn pr_svg(rows: &[Scored]) -> String {
    let mut pts = vec![(0.0, 1.0)];
    pts.extend(pr_curve(rows));
    curve("Precision-recall", "recall", "precision", &pts, false)
}

/// Score histograms, scam and legitimate side by side, in ten bins.
pub fn histogram_svg(rows: &[Scored]) -> String {
    let bins = |scam: bool| -> Vec<u32> {
        let mut b = vec![0u32; 10];
        for r in rows.iter().filter(|r| r.is_scam == scam) {
            b[((r.score * 10.0) as usize).min(9)] += 1;
        }
        b
    };
    let (s, l) = (bins(true), bins(false));
    let top = s.iter().chain(&l).copied().max().unwrap_or(1).max(1);
    svg(|root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Scores by label (red: scam, green: legitimate)",
                ("sans-serif", 15),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(0f64..1f64, 0u32..top + 1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("score")
            .y_desc("calls")
            .draw()
            .map_err(|e| e.to_string())?;
        for (counts, color, shift) in [(&l, GREEN, 0.0), (&s, RED, 0.05)] {
            chart
                .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                    let x0 = i as f64 / 10.0 + shift;
                    Rectangle::new([(x0, 0), (x0 + 0.045, c)], color.mix(0.7).filled())
                }))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// Cumulative share of scam calls alerted by each second of audio.
pub fn alert_cdf_svg(times: &[f64], scam_calls: usize) -> String {
    let max_t = times.last().copied().unwrap_or(1.0).max(1.0);
    let mut pts = vec![(0.0, 0.0)];
    for (i, &t) in times.iter().enumerate() {
        pts.push((t, i as f64 / scam_calls.max(1) as f64));
        pts.push((t, (i + 1) as f64 / scam_calls.max(1) as f64));
    }
    svg(|root| {
        let mut chart = ChartBuilder::on(&root)
            .caption("Time to first alert (scam calls)", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(0f64..max_t * 1.05, 0f64..1.02f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds of audio")
            .y_desc("share alerted")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(pts, BLUE.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// Horizontal bars: the flagged share of each type.
pub fn type_bars_svg(types: &[(String, f64, bool)]) -> String {
    let n = types.len().max(1);
    let height = (40 + 22 * n as u32).max(H);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (W + 200, height)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let built = ChartBuilder::on(&root)
            .caption(
                "Flagged share by type (red: scam types, green: legitimate)",
                ("sans-serif", 14),
            )
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(220)
            .build_cartesian_2d(0f64..1.0f64, (0..n).into_segmented());
        if let Ok(mut chart) = built {
            let labels: Vec<String> = types.iter().map(|t| t.0.clone()).collect();
            let _ = chart
                .configure_mesh()
                .y_labels(n)
                .y_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                    _ => String::new(),
                })
                .x_desc("share flagged")
                .draw();
            let _ = chart.draw_series(types.iter().enumerate().map(|(i, (_, share, scam))| {
                let color = if *scam { RED } else { GREEN };
                Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(i)),
                        (*share, SegmentValue::Exact(i + 1)),
                    ],
                    color.mix(0.6).filled(),
                )
            }));
        }
        let _ = root.present();
    }
    out
}

pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
