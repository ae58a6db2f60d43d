//! An SVG plot: msgs/s and server CPU per message by server threads, per load.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Metric, Row};

/// One color per server, the same in every chart and every run.
fn color(server: &str) -> RGBColor {
    match server {
        "ringport-io_uring" => RGBColor(0xd6, 0x27, 0x28),
        "ringport-epoll" => RGBColor(0xff, 0x7f, 0x0e),
        "tokio" => RGBColor(0x1f, 0x77, 0xb4),
        "ceiling" => RGBColor(0x55, 0x55, 0x55),
        _ => RGBColor(0x94, 0x67, 0xbd),
    }
}

/// Draws a grid: one row per load, columns msgs/s and CPU µs/msg.
///
/// # Errors
///
/// The file cannot be written.
pub fn svg(rows: &[Row], path: &Path) -> Result<(), String> {
    let mut loads: Vec<(usize, usize)> = Vec::new();
    for r in rows {
        let k = (r.scenario.connections, r.scenario.size);
        if !loads.contains(&k) {
            loads.push(k);
        }
    }
    let root = SVGBackend::new(path, (1000, 360 * loads.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let cells = root.split_evenly((loads.len().max(1), 2));
    for (i, load) in loads.iter().enumerate() {
        let in_load: Vec<&Row> = rows
            .iter()
            .filter(|r| (r.scenario.connections, r.scenario.size) == *load)
            .collect();
        let label = in_load[0].scenario.label();
        let metrics: [(&str, Metric); 2] = [
            ("msgs/s", |s| s.msgs_per_sec),
            ("server CPU µs per msg", |s| s.cpu_us_per_msg),
        ];
        for (j, (name, f)) in metrics.iter().enumerate() {
            chart(&cells[i * 2 + j], &format!("{label}: {name}"), &in_load, *f)?;
        }
    }
    root.present().map_err(|e| e.to_string())
}

fn chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    rows: &[&Row],
    f: Metric,
) -> Result<(), String> {
    let pts = |server: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| r.server == server)
            .filter_map(|r| r.median().map(|m| (r.threads as f64, f(&m))))
            .filter(|p| p.1.is_finite())
            .collect()
    };
    let mut servers: Vec<&str> = Vec::new();
    rows.iter().for_each(|r| {
        if !servers.contains(&r.server) && r.median().is_some() {
            servers.push(r.server);
        }
    });
    let all: Vec<(f64, f64)> = servers.iter().flat_map(|s| pts(s)).collect();
    let ymax = all.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.15;
    let xmax = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let mut c = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5..xmax + 1.4, 0.0..ymax)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc("server threads")
        .x_labels(xmax as usize + 2)
        .x_label_formatter(&|x| {
            if *x <= xmax + 0.01 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| short(*y))
        .draw()
        .map_err(|e| err(&e))?;
    for server in &servers {
        let color = color(server);
        let p = pts(server);
        c.draw_series(LineSeries::new(p.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(*server)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        c.draw_series(
            p.iter()
                .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
        )
        .map_err(|e| err(&e))?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))
}

/// 150k for large values, 6.1 for small ones.
fn short(y: f64) -> String {
    if y >= 1000.0 {
        format!("{:.0}k", y / 1000.0)
    } else {
        format!("{y:.1}")
    }
}
