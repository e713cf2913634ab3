//! `tcomm report runs/A runs/B ...`: a markdown table (accuracy with 95% intervals, consensus,
//! tokens, time, paired McNemar test against the first run) and plots of accuracy and consensus
//! per round (PNG and SVG), written next to the runs.
use std::path::{Path, PathBuf};

use agents::answer::{self, Grader};
use agents::metrics::{self, compare_paired, wilson_interval, Z95};
use agents::results::{read_config, read_results, ProblemResult};
use agents::thoughts::ThoughtsConfig;
use anyhow::{bail, Context};
use clap::Args;
use plotters::prelude::*;

#[derive(Args)]
pub struct ReportArgs {
    /// Run folders (each with config.json and results.jsonl); the first is the baseline of the
    /// paired tests.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where report.md and the plots go (default: the folder holding the first run).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The numbers of one run.
pub struct RunSummary {
    pub name: String,
    pub describe: String,
    pub results: Vec<ProblemResult>,
    pub accuracy_by_round: Vec<f64>,
    pub consensus_by_round: Vec<f64>,
    /// Per round: (agent turns answered correctly, agent turns). Finer than the majority: a
    /// round that turns one agent of three right shows here, not in the majority.
    pub agents_correct_by_round: Vec<(usize, usize)>,
}

impl RunSummary {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let config = read_config(dir)?;
        let results = read_results(dir)?;
        if results.is_empty() {
            bail!("{}: no results yet", dir.display());
        }
        let grader: Grader = serde_json::from_value(config["grader"].clone()).unwrap_or(Grader::Gsm8k);
        let equal = grader.equal();
        let rounds = results.iter().map(|r| r.rounds.len()).max().unwrap_or(0);
        let mut accuracy_by_round = vec![0.0; rounds];
        let mut consensus_by_round = vec![0.0; rounds];
        let mut agents_correct_by_round = vec![(0, 0); rounds];
        for r in &results {
            for (i, round) in r.rounds.iter().enumerate() {
                agents_correct_by_round[i].0 += round.iter().filter(|t| t.correct).count();
                agents_correct_by_round[i].1 += round.len();
                let answers: Vec<Option<String>> = round.iter().map(|t| t.answer.clone()).collect();
                let majority = answer::majority(&answers, equal);
                accuracy_by_round[i] += f64::from(u8::from(majority.is_some_and(|m| equal(&m, &r.gold))));
                consensus_by_round[i] += metrics::consensus(&answers, equal);
            }
        }
        let n = results.len() as f64;
        accuracy_by_round.iter_mut().chain(consensus_by_round.iter_mut()).for_each(|x| *x /= n);
        let agents = config["agents"].as_array().map_or(0, Vec::len);
        let model = config["agents"][0]["model"].as_str().unwrap_or("?");
        // The numerics, where the run recorded them: "qwen2.5-0.5b bf16", "... f32 int8".
        let numerics: String = ["dtype", "weights"]
            .iter()
            .filter_map(|key| config["agents"][0][key].as_str())
            .filter(|v| !v.is_empty() && *v != "dense")
            .map(|v| format!(" {v}"))
            .collect();
        let describe = format!(
            "{} {}, {} agent(s), {} round(s), {model}{numerics}",
            config["mode"].as_str().unwrap_or("?"),
            config["dataset"].as_str().unwrap_or("?"),
            agents,
            config["rounds"].as_u64().unwrap_or(1)
        );
        // Ablations of thought communication, named in the setup so that arms stay told apart.
        let describe = match serde_json::from_value::<ThoughtsConfig>(config["thoughts"].clone()) {
            Ok(thoughts) if !thoughts.ablations().is_empty() => format!("{describe} ({})", thoughts.ablations().join(", ")),
            _ => describe,
        };
        let describe = match config["first_round_from"].as_str() {
            // Its latency covers the later rounds only: the first was not generated here.
            Some(source) if config["mode"] == "thoughtcomm" => {
                format!("{describe}, round 1 from {source}, fed back for its states (latency: that and later rounds)")
            }
            Some(source) => format!("{describe}, round 1 from {source} (latency: later rounds)"),
            None => describe,
        };
        let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
        Ok(RunSummary { name, describe, results, accuracy_by_round, consensus_by_round, agents_correct_by_round })
    }

    fn correct(&self) -> usize {
        self.results.iter().filter(|r| r.correct).count()
    }
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let runs: Vec<RunSummary> = args.runs.iter().map(|d| RunSummary::load(d)).collect::<anyhow::Result<_>>()?;
    let out = match &args.out {
        Some(o) => o.clone(),
        None => args.runs[0].parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".")),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("{}: cannot create", out.display()))?;
    let markdown = markdown(&runs)?;
    std::fs::write(out.join("report.md"), &markdown).with_context(|| format!("{}: cannot write report.md", out.display()))?;
    for (file, title, values) in [
        ("accuracy_per_round", "Accuracy of the majority answer per round", runs.iter().map(|r| &r.accuracy_by_round).collect::<Vec<_>>()),
        ("consensus_per_round", "Consensus per round", runs.iter().map(|r| &r.consensus_by_round).collect()),
    ] {
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        plot(&out.join(format!("{file}.svg")), title, &names, &values, false)?;
        plot(&out.join(format!("{file}.png")), title, &names, &values, true)?;
    }
    println!("{markdown}");
    eprintln!("report written to {} (report.md, accuracy_per_round.png/svg, consensus_per_round.png/svg)", out.display());
    Ok(())
}

pub fn markdown(runs: &[RunSummary]) -> anyhow::Result<String> {
    let mut md = String::from(
        "| run | setup | n | accuracy | 95% CI | unparsable | consensus (last round) | tokens / problem | latency / problem (s) | p vs first (McNemar) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let base: Vec<(String, bool)> = runs[0].results.iter().map(|r| (r.id.clone(), r.correct)).collect();
    for run in runs {
        let n = run.results.len();
        let correct = run.correct();
        let (lo, hi) = wilson_interval(correct, n, Z95);
        let unparsable = run.results.iter().filter(|r| r.final_answer.is_none()).count();
        let tokens = run.results.iter().map(ProblemResult::tokens).sum::<usize>() as f64 / n as f64;
        let time = run.results.iter().map(|r| r.wall_time_s).sum::<f64>() / n as f64;
        let mine: Vec<(String, bool)> = run.results.iter().map(|r| (r.id.clone(), r.correct)).collect();
        // Paired on the problems both runs finished.
        let ids = |rs: &[(String, bool)]| -> std::collections::HashSet<String> { rs.iter().map(|(id, _)| id.clone()).collect() };
        let (base_ids, mine_ids) = (ids(&base), ids(&mine));
        let mine_common: Vec<(String, bool)> = mine.iter().filter(|(id, _)| base_ids.contains(id)).cloned().collect();
        let base_common: Vec<(String, bool)> = base.iter().filter(|(id, _)| mine_ids.contains(id)).cloned().collect();
        let p = if std::ptr::eq(run, &runs[0]) {
            "-".to_string()
        } else {
            let cmp = compare_paired(&base_common, &mine_common)?;
            format!("{:.3} (n={}, {}↑ {}↓)", cmp.p_value, cmp.n, cmp.only_b, cmp.only_a)
        };
        md.push_str(&format!(
            "| {} | {} | {n} | {:.1}% | [{:.1}, {:.1}] | {unparsable} | {:.2} | {tokens:.0} | {time:.1} | {p} |\n",
            run.name,
            run.describe,
            100.0 * correct as f64 / n as f64,
            100.0 * lo,
            100.0 * hi,
            run.consensus_by_round.last().copied().unwrap_or(0.0),
        ));
    }
    md.push_str(&format!(
        "\nAccuracy per round (majority answer of the round; agent turns answered correctly; responses identical to {}'s \
         on the same problem and agent, of the turns both runs have: how much of a paired run actually differs):\n\n",
        runs[0].name
    ));
    for run in runs {
        let rounds: Vec<String> = run.accuracy_by_round.iter().map(|a| format!("{:.1}%", 100.0 * a)).collect();
        let agents: Vec<String> = run.agents_correct_by_round.iter().map(|(c, n)| format!("{c}/{n}")).collect();
        let identical = if std::ptr::eq(run, &runs[0]) {
            String::new()
        } else {
            let per_round: Vec<String> = identical_turns(&runs[0].results, &run.results).iter().map(|(k, n)| format!("{k}/{n}")).collect();
            format!("; identical: {}", per_round.join(" → "))
        };
        md.push_str(&format!("- {}: {} (agents: {}{identical})\n", run.name, rounds.join(" → "), agents.join(" → ")));
    }
    let named: Vec<(&str, &[ProblemResult])> = runs.iter().map(|r| (r.name.as_str(), r.results.as_slice())).collect();
    if let Some(section) = crate::report_thoughts::section(&named) {
        md.push_str(&section);
    }
    Ok(md)
}

/// Per round: (turns of `run` whose response equals `base`'s for the same problem and agent,
/// turns present in both).
fn identical_turns(base: &[ProblemResult], run: &[ProblemResult]) -> Vec<(usize, usize)> {
    let base: std::collections::HashMap<&str, &ProblemResult> = base.iter().map(|b| (b.id.as_str(), b)).collect();
    let mut counts: Vec<(usize, usize)> = Vec::new();
    for r in run {
        let Some(b) = base.get(r.id.as_str()) else { continue };
        for (i, (mine, theirs)) in r.rounds.iter().zip(&b.rounds).enumerate() {
            if counts.len() <= i {
                counts.resize(i + 1, (0, 0));
            }
            for (t, u) in mine.iter().zip(theirs) {
                counts[i].0 += usize::from(t.response == u.response);
                counts[i].1 += 1;
            }
        }
    }
    counts
}

fn plot(path: &Path, title: &str, names: &[&str], series: &[&Vec<f64>], png: bool) -> anyhow::Result<()> {
    let result = if png {
        draw(BitMapBackend::new(path, (800, 500)).into_drawing_area(), title, names, series)
    } else {
        draw(SVGBackend::new(path, (800, 500)).into_drawing_area(), title, names, series)
    };
    result.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Horizontal offset of run `i` of `runs` around its round, so that runs with equal values
/// (two runs at 19% in the same round) stay visible side by side instead of one hiding the other.
fn dodge(i: usize, runs: usize) -> f64 {
    const SPREAD: f64 = 0.2;
    if runs < 2 {
        return 0.0;
    }
    SPREAD * (i as f64 / (runs - 1) as f64 - 0.5)
}

/// A line per run over rounds, values in [0, 1] shown as percentages.
fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    names: &[&str],
    series: &[&Vec<f64>],
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let rounds = series.iter().map(|s| s.len()).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.5f64..rounds as f64 + 0.5, 0.0f64..1.0)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("round")
        .x_labels(rounds)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, values)) in names.iter().zip(series).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let x_shift = dodge(i, names.len());
        let points: Vec<(f64, f64)> = values.iter().enumerate().map(|(r, v)| (r as f64 + 1.0 + x_shift, *v)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled()))).map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::dodge;

    #[test]
    fn runs_are_dodged_apart_within_their_round() {
        assert_eq!(dodge(0, 1), 0.0);
        let shifts: Vec<f64> = (0..4).map(|i| dodge(i, 4)).collect();
        assert!(shifts.windows(2).all(|w| w[1] > w[0]), "{shifts:?}");
        assert!((shifts[0] + 0.1).abs() < 1e-12 && (shifts[3] - 0.1).abs() < 1e-12, "{shifts:?}");
    }
}
