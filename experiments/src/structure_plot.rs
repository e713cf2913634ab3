//! The recovered thought structure as a heatmap (PNG): agents as rows, latent thoughts as columns,
//! each cell's shade its normalized Jacobian score, outlined where B[i][j] = 1.
use std::path::Path;

use plotters::prelude::*;
use thoughtcomm::ThoughtStructure;

pub fn heatmap(path: &Path, s: &ThoughtStructure) -> anyhow::Result<()> {
    draw(path, s).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn draw(path: &Path, s: &ThoughtStructure) -> Result<(), String> {
    let (n, k) = (s.num_agents().max(1), s.num_latents().max(1));
    let width = (120 + 14 * k).clamp(400, 2400) as u32;
    let root = BitMapBackend::new(path, (width, (110 + 40 * n) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Thought structure B (threshold {})", s.threshold), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0..k as i32, 0..n as i32)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("latent thought")
        .y_desc("agent")
        .y_labels(n)
        .draw()
        .map_err(|e| e.to_string())?;
    let cells = s.scores.iter().enumerate().flat_map(|(i, row)| {
        row.iter().enumerate().map(move |(j, &score)| {
            let shade = (255.0 * (1.0 - score.clamp(0.0, 1.0))) as u8;
            Rectangle::new([(j as i32, i as i32), (j as i32 + 1, i as i32 + 1)], RGBColor(shade, shade, 255).filled())
        })
    });
    chart.draw_series(cells).map_err(|e| e.to_string())?;
    let used = s.b.iter().enumerate().flat_map(|(i, row)| {
        row.iter().enumerate().filter(|(_, &on)| on).map(move |(j, _)| Rectangle::new([(j as i32, i as i32), (j as i32 + 1, i as i32 + 1)], BLACK.stroke_width(1)))
    });
    chart.draw_series(used).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
