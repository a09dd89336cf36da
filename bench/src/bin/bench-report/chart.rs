//! docs/latency.svg: each cell's latency ratio to tower-sessions, ours and always_save.

use std::fmt::Write as _;

use crate::latency::{cell_label, LatencyRow};
use crate::schema::{OURS, TS_ALWAYS};
use crate::stats::Spread;

/// Which ratio of a row a chart series shows.
type RatioOf = fn(&LatencyRow) -> Option<&Spread>;

/// Ratios to tower-sessions default per cell, ours and always_save, on a log scale around a
/// 1.0 line; whiskers span the rounds' min–max.
pub fn svg(rows: &[LatencyRow]) -> String {
    let series: [(&str, &str, RatioOf); 2] = [
        (OURS, "#2b6cb0", |r| r.ours_to_tower_sessions.as_ref()),
        (TS_ALWAYS, "#c05621", |r| {
            r.always_save_to_tower_sessions.as_ref()
        }),
    ];
    let values: Vec<f64> = rows
        .iter()
        .flat_map(|r| series.iter().filter_map(|(_, _, f)| f(r)))
        .flat_map(|s| [s.min, s.max])
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = values.iter().fold(0.5f64, |a, &b| a.min(b)).log2().floor();
    let hi = values.iter().fold(2.0f64, |a, &b| a.max(b)).log2().ceil();
    let (label_w, plot_w, bar_h, gap, top) = (150.0, 560.0, 11.0, 12.0, 90.0);
    let x = |v: f64| label_w + (v.log2() - lo) / (hi - lo) * plot_w;
    let row_h = bar_h * 2.0 + gap;
    let height = top + row_h * rows.len() as f64 + 30.0;
    let width = label_w + plot_w + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">Latency per request ÷ tower-sessions (default), lower is better</text>"#
    );
    let _ = writeln!(
        out,
        r##"<text x="10" y="38" font-size="11" fill="#555">Median of per-round ratios, whiskers: min–max over rounds; log scale</text>"##
    );
    for (i, (lib, color, _)) in series.iter().enumerate() {
        let lx = 10.0 + i as f64 * 230.0;
        let _ = writeln!(
            out,
            r#"<rect x="{lx}" y="48" width="12" height="12" fill="{color}"/><text x="{}" y="59">{lib}</text>"#,
            lx + 16.0
        );
    }
    let bottom = top + row_h * rows.len() as f64;
    for p in lo as i32..=hi as i32 {
        let v = 2f64.powi(p);
        let tx = x(v);
        let (stroke, w) = if p == 0 { ("#000", 1.5) } else { ("#ddd", 1.0) };
        let _ = writeln!(
            out,
            r#"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{bottom}" stroke="{stroke}" stroke-width="{w}"/><text x="{tx:.1}" y="{}" text-anchor="middle" font-size="10">{}×</text>"#,
            top - 4.0,
            bottom + 14.0,
            if v < 1.0 {
                format!("{v}")
            } else {
                format!("{v:.0}")
            }
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="10">tower-sessions default</text>"#,
        x(1.0),
        top - 10.0
    );
    for (i, row) in rows.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + bar_h * 1.4,
            cell_label(&row.scenario, row.size.as_deref())
        );
        for (j, (_, color, f)) in series.iter().enumerate() {
            let Some(s) = f(row) else { continue };
            let by = y + j as f64 * bar_h;
            let (x1, x0) = (x(s.median), x(1.0));
            let (left, w) = (x0.min(x1), (x1 - x0).abs().max(1.0));
            let mid = by + (bar_h - 1.0) / 2.0;
            // Right of the whisker and of the 1× line, clear of the labels.
            let tx = x(s.max).max(x0) + 4.0;
            let _ = writeln!(
                out,
                r##"<rect x="{left:.1}" y="{by}" width="{w:.1}" height="{}" fill="{color}"/><line x1="{:.1}" y1="{mid}" x2="{:.1}" y2="{mid}" stroke="#222"/><text x="{tx:.1}" y="{}" font-size="10">{:.2}×</text>"##,
                bar_h - 1.0,
                x(s.min),
                x(s.max),
                by + bar_h - 2.0,
                s.median
            );
        }
    }
    out.push_str("</svg>\n");
    out
}
