// TEMPORARY sweep driver (deleted before hand-off).
use thoughtcomm::benchmark::{run, BenchConfig};
use thoughtcomm::synthetic::SyntheticConfig;
use thoughtcomm::*;
fn main() {
    tch::set_num_threads(1);
    let a: Vec<String> = std::env::args().collect();
    let est: Estimator = a[1].parse().unwrap();
    let lambda: f64 = a[2].parse().unwrap();
    let seed: u64 = a[3].parse().unwrap();
    let steps: u64 = a[4].parse().unwrap();
    let samples: usize = a.get(5).map_or(5000, |s| s.parse().unwrap());
    let thr: f64 = a.get(6).map_or(0.1, |s| s.parse().unwrap());
    let cfg = BenchConfig {
        data: SyntheticConfig { agents: 3, latent_dim: 24, samples, seed },
        estimator: est, lambda, hidden: std::env::var("TC_HID").map(|v| v.split(',').map(|x| x.parse().unwrap()).collect()).unwrap_or(vec![64, 64]), steps,
        train: TrainConfig { batch_size: 128, learning_rate: 1e-3, seed },
        structure: StructureConfig { aggregate: Aggregate::Max, threshold: thr },
    };
    if a.get(7).map(|s| s.as_str()) == Some("rw") {
        let data = thoughtcomm::synthetic::generate(&cfg.data).unwrap();
        let eps: f64 = a[8].parse().unwrap(); let lam2: f64 = a[9].parse().unwrap(); let s1: u64 = a[10].parse().unwrap();
        let aec = AutoencoderConfig { block_sizes: data.states.block_sizes().to_vec(), latent_dim: 24, hidden: vec![64,64], lambda, estimator: est };
        let mut ae = ThoughtAutoencoder::new(aec.clone(), cfg.train.clone()).unwrap();
        ae.fit(&data.states, s1).unwrap();
        let report = |ae: &ThoughtAutoencoder, tag: &str| {
            let zh = ae.encode(&data.states).unwrap();
            let m = thoughtcomm::metrics::match_latents(&zh, &data.latents).unwrap();
            let st = ThoughtStructure::recover(ae, &data.states, &cfg.structure).unwrap();
            println!("{tag}: sh {:.3} pr {:.3} f1 {:.3}", m.mcc(|j| data.alpha(j) >= 2), m.mcc(|j| data.alpha(j) == 1), thoughtcomm::metrics::structure_f1(&data.true_b, &st.b, &m));
        };
        report(&ae, "stage1");
        // weights from mean |J| * std over the data
        let x = ae.normalize(&data.states).unwrap();
        let w = tch::no_grad(|| { let z = ae.network().encoder.forward(&x); let sd = z.std_dim(0, true, false);
            let (_, j) = ae.network().decoder.forward_with_jacobian(&z); let a = j.abs().mean_dim(0, false, tch::Kind::Float) * sd; let a = &a / a.max(); 1.0 / (a + eps) * eps });
        ae.network_mut().penalty_weights = Some(w);
        let mut ae2 = ae; let mut c2 = aec.clone(); c2.lambda = lam2;
        // change lambda: hack via new config is not possible; emulate by scaling weights
        let w = ae2.network().penalty_weights.as_ref().unwrap() * (lam2 / lambda);
        ae2.network_mut().penalty_weights = Some(w);
        ae2.fit(&data.states, steps - s1).unwrap();
        report(&ae2, "stage2");
        return;
    }
    if a.get(7).is_some() {
        let data = thoughtcomm::synthetic::generate(&cfg.data).unwrap();
        let aec = AutoencoderConfig { block_sizes: data.states.block_sizes().to_vec(), latent_dim: 24, hidden: vec![64,64], lambda, estimator: est };
        let mut ae = ThoughtAutoencoder::new(aec, cfg.train.clone()).unwrap();
        ae.fit(&data.states, steps).unwrap();
        let zh = ae.encode(&data.states).unwrap().to_kind(tch::Kind::Double);
        let z = data.latents.to_kind(tch::Kind::Double);
        let st = |x: &tch::Tensor| { let c = x - x.mean_dim(0, true, tch::Kind::Double); let n = c.square().sum_dim_intlist(0, true, tch::Kind::Double).sqrt(); c / n };
        let c = st(&z).tr().matmul(&st(&zh)).abs();
        let m = thoughtcomm::metrics::match_latents(&zh, &z).unwrap();
        for j in 0..24usize { let row = c.get(j as i64); let (v, ix) = row.topk(3, 0, true, true);
            let v = Vec::<f64>::try_from(&v).unwrap(); let ix = Vec::<i64>::try_from(&ix).unwrap();
            println!("true {j:2} (alpha {}) matched {:2} corr {:.2} | top {:?} {:?}", data.alpha(j), m.estimated[j], m.correlations[j], ix, v.iter().map(|x| (x*100.0).round()/100.0).collect::<Vec<_>>()); }
        let s = ThoughtStructure::recover(&ae, &data.states, &cfg.structure).unwrap();
        for (i, row) in s.scores.iter().enumerate() { println!("scores agent {i}: {:?}", m.estimated.iter().map(|&e| (row[e]*100.0).round()/100.0).collect::<Vec<_>>()); }
        println!("true b {:?}", data.true_b.iter().map(|r| r.iter().map(|&b| b as u8).collect::<Vec<_>>()).collect::<Vec<_>>());
        return;
    }
    let r = run(&cfg).unwrap();
    let f = |s: &thoughtcomm::benchmark::RecoveryScores| format!("sh {:.3} pr {:.3} f1 {:.3} rec {:.4} t {:.1}", s.mcc_shared, s.mcc_private, s.structure_f1, s.reconstruction, s.train_seconds);
    println!("{} lam {} seed {} steps {} | {} | abl {}", est, lambda, seed, steps, f(&r.sparse), f(&r.no_sparsity));
    eprintln!("corr {:?}", r.sparse.correlations.iter().map(|c| (c*100.0).round()/100.0).collect::<Vec<_>>());
    eprintln!("alpha true {:?}\nalpha rec  {:?}", r.true_alpha, r.sparse.recovered_alpha);
}
