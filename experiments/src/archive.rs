//! `tcomm archive`: a run folder copied for sharing (into `results/`, to another machine) with
//! every problem's question blanked, so that no dataset text travels with it. The `id` still
//! names each problem: `tcomm debate` resumes an archived run and `tcomm train-adapter` restores
//! its questions from the dataset.
use std::collections::HashSet;
use std::path::PathBuf;

use agents::results::{read_config, read_results, RunWriter};
use agents::states::{file_name, STATES_DIR};
use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct ArchiveArgs {
    /// The run folder (config.json, results.jsonl, states/ when saved).
    pub run: PathBuf,
    /// The archive folder. When it already holds an archive of the same run, the problems it
    /// lacks are added (archive again as the run goes on).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ArchiveArgs) -> anyhow::Result<()> {
    let config = read_config(&args.run)?;
    let results = read_results(&args.run)?;
    let (mut writer, archived) = RunWriter::open(&args.out, &config)
        .with_context(|| format!("{} cannot take an archive of {}", args.out.display(), args.run.display()))?;
    let archived: HashSet<String> = archived.into_iter().map(|r| r.id).collect();
    let (from_dir, to_dir) = (args.run.join(STATES_DIR), args.out.join(STATES_DIR));
    if from_dir.is_dir() {
        std::fs::create_dir_all(&to_dir).with_context(|| format!("{}: cannot create", to_dir.display()))?;
    }
    let (mut added, mut states) = (0, 0);
    for mut result in results.into_iter().filter(|r| !archived.contains(&r.id)) {
        // States first: a problem in results.jsonl must have its states there when the run saved them.
        let name = file_name(&result.id);
        let from = from_dir.join(&name);
        if from.exists() {
            std::fs::copy(&from, to_dir.join(&name)).with_context(|| format!("copying {}", from.display()))?;
            states += 1;
        }
        result.question.clear();
        writer.append(&result)?;
        added += 1;
    }
    println!(
        "{}: {added} problems added ({states} with states), {} already there; questions blanked",
        args.out.display(),
        archived.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use agents::results::ProblemResult;
    use serde_json::json;

    fn result(id: &str) -> ProblemResult {
        serde_json::from_value(json!({"id": id, "question": format!("text of {id}"), "gold": "4", "final_answer": "4",
            "correct": true, "rounds": []}))
        .unwrap()
    }

    #[test]
    fn an_archive_blanks_questions_keeps_states_and_grows_with_the_run() {
        let (source, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let out = out.path().join("archive");
        let config = json!({"format": 2, "mode": "text", "limit": 3});
        let (mut writer, _) = RunWriter::open(source.path(), &config).unwrap();
        writer.append(&result("d/0")).unwrap();
        std::fs::create_dir(source.path().join(STATES_DIR)).unwrap();
        std::fs::write(source.path().join(STATES_DIR).join(file_name("d/0")), b"states of d/0").unwrap();
        let archive = || run(ArchiveArgs { run: source.path().to_path_buf(), out: out.clone() });
        archive().unwrap();
        writer.append(&result("d/1")).unwrap();
        archive().unwrap();
        archive().unwrap();

        let archived = read_results(&out).unwrap();
        let ids: Vec<&str> = archived.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["d/0", "d/1"], "each problem once, in order");
        assert!(archived.iter().all(|r| r.question.is_empty() && r.gold == "4"));
        assert_eq!(std::fs::read(out.join(STATES_DIR).join(file_name("d/0"))).unwrap(), b"states of d/0");
        assert_eq!(read_config(&out).unwrap(), config);
    }

    #[test]
    fn an_archive_of_another_run_is_refused() {
        let (run_a, run_b, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        RunWriter::open(run_a.path(), &json!({"format": 2, "mode": "text"})).unwrap();
        RunWriter::open(run_b.path(), &json!({"format": 2, "mode": "single"})).unwrap();
        run(ArchiveArgs { run: run_a.path().to_path_buf(), out: out.path().to_path_buf() }).unwrap();
        let err = run(ArchiveArgs { run: run_b.path().to_path_buf(), out: out.path().to_path_buf() }).unwrap_err();
        assert!(format!("{err:#}").contains("differs in: mode"), "{err:#}");
    }
}
