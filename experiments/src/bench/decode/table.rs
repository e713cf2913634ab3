//! The human-readable table of `tcomm bench decode` (the JSON form is the serialized `Report`).
use super::super::mib;
use super::Report;

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

pub(super) fn print_table(r: &Report) {
    println!(
        "model: {} ({}), device {}, {} threads",
        r.model, r.architecture, r.device, r.threads
    );
    let w = &r.weights;
    let source = if r.gguf.is_some() {
        let from: Vec<String> = w.dequantized_from.iter().map(|(k, n)| format!("{k} x{n}")).collect();
        format!("dequantized from the GGUF's {}", from.join(", "))
    } else {
        "from a safetensors checkpoint".to_string()
    };
    println!(
        "weights: {} {source} ({:.1}M parameters; {:.1} MB read per batch-1 token)",
        w.format,
        w.parameters as f64 / 1e6,
        w.bytes_per_token as f64 / 1e6
    );
    println!(
        "prompts: {} tokens each (same ids on both sides), {} new tokens, greedy, warm-up {} tokens, \
         best of {} run(s) per side, OMP_WAIT_POLICY {}",
        r.prompt_tokens, r.new_tokens, r.warmup_tokens, r.repeat, r.omp_wait_policy
    );
    println!();
    let on_gpu = r.runs.iter().any(|run| run.ours.peak_device_bytes.is_some());
    let mut header = vec![
        "batch",
        "ours tok/s",
        "hf tok/s",
        "ours/hf",
        "ours dec tok/s",
        "hf dec tok/s",
        "dec ratio",
        "TTFT ours",
        "TTFT hf",
        "RSS ours",
        "RSS hf",
        "same",
    ];
    if on_gpu {
        header.extend(["GPU mem ours", "GPU mem hf"]);
    }
    let rows: Vec<Vec<String>> = r
        .runs
        .iter()
        .map(|run| {
            let t = run.transformers.as_ref();
            let mut row = vec![
                run.batch.to_string(),
                format!("{:.1}", run.ours.tokens_per_s),
                opt(t.map(|t| t.tokens_per_s), |v| format!("{v:.1}")),
                opt(run.ratio, |v| format!("{v:.2}x")),
                format!("{:.1}", run.ours.decode_tokens_per_s),
                opt(t.map(|t| t.decode_tokens_per_s), |v| format!("{v:.1}")),
                opt(run.decode_ratio, |v| format!("{v:.2}x")),
                format!("{:.3}s", run.ours.ttft_s),
                opt(t.map(|t| t.ttft_s), |v| format!("{v:.3}s")),
                mib(run.ours.peak_rss_bytes),
                t.map_or("-".into(), |t| mib(t.peak_rss_bytes)),
                run.same_tokens
                    .map_or("-".into(), |s| format!("{s}/{}", run.batch)),
            ];
            if on_gpu {
                let gpu = |b: Option<u64>| b.map_or("-".into(), mib);
                row.push(gpu(run.ours.peak_device_bytes));
                row.push(gpu(t.and_then(|t| t.peak_device_bytes)));
            }
            row
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        println!("{}", padded.join("  "));
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for row in rows {
        line(row);
    }
    for run in &r.runs {
        if let Some(e) = &run.transformers_error {
            println!("transformers failed at batch {}: {e}", run.batch);
        }
    }
    println!();
    let reach = r.roofline_fraction_batch1.map_or(String::new(), |f| {
        format!("; ours reaches {:.0}% of it (decode tok/s at batch 1)", f * 100.0)
    });
    println!(
        "roofline: {:.1} GB/s memory bandwidth / {:.1} MB per token = {:.1} tokens/s at batch 1{reach}",
        r.memory_bandwidth_gbs,
        w.bytes_per_token as f64 / 1e6,
        r.roofline_batch1_tokens_per_s
    );
    println!("{}", r.llamacpp_note);
    let busiest = r
        .runs
        .iter()
        .filter_map(|run| run.load_average)
        .fold(0.0f64, f64::max);
    if busiest > 0.5 {
        println!(
            "note: other processes were running (load average up to {busiest:.1} on {} cores): timings are skewed, \
             multi-threaded ones most",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
    }
}
