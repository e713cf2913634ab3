//! `tcomm archive`: a run folder copied for sharing (into `results/`, to another machine) with
//! every problem's question blanked, so that no dataset text travels with it. The `id` still
//! names each problem: `tcomm debate` resumes an archived run and `tcomm train-adapter` restores
//! its questions from the dataset. A thought pipeline folder (`tcomm train --out`) is archived
//! as the files its manifest names plus its collected debates, so that ThoughtComm runs resume
//! against it on another machine (their recorded digest covers exactly those files).
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use agents::results::{read_config, read_results, RunWriter};
use agents::states::{file_name, STATES_DIR};
use anyhow::Context;
use clap::Args;
use thoughtcomm::pipeline::{PipelineManifest, MANIFEST_FILE};

use crate::train_pipeline::COLLECT_DIR;

#[derive(Args)]
pub struct ArchiveArgs {
    /// The run folder (config.json, results.jsonl, states/ when saved), or a thought pipeline
    /// folder (manifest.json, the checkpoints it names, collect/).
    pub run: PathBuf,
    /// The archive folder. When it already holds an archive of the same run, the problems it
    /// lacks are added (archive again as the run goes on).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ArchiveArgs) -> anyhow::Result<()> {
    if args.run.join(MANIFEST_FILE).is_file() {
        return archive_pipeline(&args.run, &args.out);
    }
    archive_run(&args.run, &args.out)
}

/// The manifest and the checkpoints (with their JSON configs) it names, copied as they are; the
/// training folders beside them (ae/, optimizer state) stay behind, except `collect/`, the
/// debates the pipeline was trained on, which is archived as a run.
fn archive_pipeline(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let manifest = PipelineManifest::read(dir)?;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let mut copied = 0;
    for from in manifest.part_files(dir).into_iter().chain([dir.join(MANIFEST_FILE)]) {
        let relative = from
            .strip_prefix(dir)
            .ok()
            .filter(|r| r.components().all(|c| matches!(c, Component::Normal(_))))
            .with_context(|| format!("{}: the manifest names a file outside the pipeline folder", from.display()))?;
        let to = out.join(relative);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("{}: cannot create", parent.display()))?;
        }
        std::fs::copy(&from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        copied += 1;
    }
    println!("{}: the pipeline's manifest and {} checkpoint files", out.display(), copied - 1);
    let collect = dir.join(COLLECT_DIR);
    if collect.join("config.json").is_file() {
        archive_run(&collect, &out.join(COLLECT_DIR))?;
    }
    Ok(())
}

fn archive_run(run: &Path, out: &Path) -> anyhow::Result<()> {
    let config = read_config(run)?;
    let results = read_results(run)?;
    let (mut writer, archived) =
        RunWriter::open(out, &config).with_context(|| format!("{} cannot take an archive of {}", out.display(), run.display()))?;
    let archived: HashSet<String> = archived.into_iter().map(|r| r.id).collect();
    let (from_dir, to_dir) = (run.join(STATES_DIR), out.join(STATES_DIR));
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
        out.display(),
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
    fn a_pipeline_archive_keeps_what_debates_load_and_its_collected_run() {
        use thoughtcomm::pipeline::PipelineAgent;
        let (dir, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (dir, out) = (dir.path(), out.path().join("pipeline"));
        let mut manifest = PipelineManifest::new(vec![PipelineAgent { model: "m".into(), hidden_size: 4 }], 2);
        manifest.adapters.insert("m".into(), PipelineManifest::adapter_file("m"));
        manifest.provenance = json!({"run": "runs/x/collect"});
        manifest.write(dir).unwrap();
        for (name, bytes) in [
            ("autoencoder.safetensors", &b"ae weights"[..]),
            ("autoencoder.json", b"{\"k\": 2}"),
            ("structure.json", b"{\"b\": []}"),
            ("adapter-m.safetensors", b"adapter weights"),
            ("adapter-m.json", b"{\"step\": 10}"),
        ] {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        std::fs::create_dir(dir.join("ae")).unwrap();
        std::fs::write(dir.join("ae").join("optimizer.safetensors"), b"training state").unwrap();
        let (mut writer, _) = RunWriter::open(&dir.join(COLLECT_DIR), &json!({"format": 2, "mode": "text"})).unwrap();
        writer.append(&result("t/0")).unwrap();

        run(ArchiveArgs { run: dir.to_path_buf(), out: out.clone() }).unwrap();
        for name in ["manifest.json", "autoencoder.safetensors", "autoencoder.json", "structure.json", "adapter-m.safetensors", "adapter-m.json"] {
            assert_eq!(std::fs::read(out.join(name)).unwrap(), std::fs::read(dir.join(name)).unwrap(), "{name}");
        }
        assert!(!out.join("ae").exists(), "training state stays behind");
        let collected = read_results(&out.join(COLLECT_DIR)).unwrap();
        assert_eq!((collected.len(), collected[0].question.as_str()), (1, ""));
        assert_eq!(crate::debate::pipeline_digest(&out).unwrap(), crate::debate::pipeline_digest(dir).unwrap());
        // Rerun after the pipeline trained further: the checkpoints are replaced, the run grows.
        std::fs::write(dir.join("adapter-m.safetensors"), b"adapter weights, later").unwrap();
        writer.append(&result("t/1")).unwrap();
        run(ArchiveArgs { run: dir.to_path_buf(), out: out.clone() }).unwrap();
        assert_eq!(std::fs::read(out.join("adapter-m.safetensors")).unwrap(), b"adapter weights, later");
        assert_eq!(read_results(&out.join(COLLECT_DIR)).unwrap().len(), 2);
        // A manifest naming a file outside its folder is refused, not copied out of the archive.
        manifest.structure = "../structure.json".into();
        manifest.write(dir).unwrap();
        let err = run(ArchiveArgs { run: dir.to_path_buf(), out: out.clone() }).unwrap_err();
        assert!(format!("{err:#}").contains("outside the pipeline folder"), "{err:#}");
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
