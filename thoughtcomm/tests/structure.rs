//! Structure read-out, matching and the metrics of the benchmark.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Kind, Tensor};
use thoughtcomm::metrics::{hungarian_max, match_latents, structure_f1, Matching};
use thoughtcomm::synthetic::{generate, SyntheticConfig};
use thoughtcomm::{Aggregate, StructureConfig, ThoughtStructure};

fn brute_force_best(w: &[Vec<f64>]) -> f64 {
    // Every injective map of rows to columns, by recursion over rows.
    fn go(w: &[Vec<f64>], row: usize, used: &mut Vec<bool>) -> f64 {
        if row == w.len() {
            return 0.0;
        }
        let mut best = f64::NEG_INFINITY;
        for c in 0..used.len() {
            if !used[c] {
                used[c] = true;
                best = best.max(w[row][c] + go(w, row + 1, used));
                used[c] = false;
            }
        }
        best
    }
    go(w, 0, &mut vec![false; w[0].len()])
}

#[test]
fn hungarian_finds_the_optimum() {
    let mut rng = StdRng::seed_from_u64(0);
    for trial in 0..200 {
        let rows = 1 + trial % 6;
        let cols = rows + trial % 3;
        let w: Vec<Vec<f64>> = (0..rows).map(|_| (0..cols).map(|_| rng.random::<f64>()).collect()).collect();
        let assignment = hungarian_max(&w);
        let mut seen = assignment.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), rows, "not one-to-one: {assignment:?}");
        let total: f64 = assignment.iter().enumerate().map(|(r, &c)| w[r][c]).sum();
        assert!((total - brute_force_best(&w)).abs() < 1e-9, "trial {trial}: {total} is not optimal");
    }
}

#[test]
fn mcc_is_one_for_a_permuted_rescaled_copy() {
    let z = Tensor::randn([500, 5], (Kind::Float, tch::Device::Cpu));
    let perm = Tensor::from_slice(&[3i64, 0, 4, 1, 2]);
    let scale = Tensor::from_slice(&[2.0f32, -1.0, 0.5, -3.0, 1.0]);
    let recovered = Tensor::cat(&[z.index_select(1, &perm) * scale + 1.0, z.narrow(1, 0, 1) * 0.0], 1);
    let m = match_latents(&recovered, &z).expect("match");
    assert_eq!(m.estimated, vec![1, 3, 4, 0, 2]);
    assert!(m.mcc(|_| true) > 1.0 - 1e-6);
    assert!(match_latents(&z, &recovered).is_err(), "fewer recovered than true latents must be refused");
}

#[test]
fn f1_counts_agent_latent_pairs_after_matching() {
    let truth = vec![vec![true, true, false], vec![true, false, true]];
    let matching = Matching { estimated: vec![2, 0, 1], correlations: vec![1.0; 3] };
    // Recovered latent e plays the role of the true latent j with estimated[j] == e.
    let exact = vec![vec![true, false, true], vec![false, true, true]];
    assert_eq!(structure_f1(&truth, &exact, &matching), 1.0);
    let all = vec![vec![true; 3]; 2];
    assert!((structure_f1(&truth, &all, &matching) - 0.8).abs() < 1e-12); // tp 4, fp 2, fn 0
    assert_eq!(structure_f1(&truth, &[vec![false; 3], vec![false; 3]], &matching), 0.0);
}

#[test]
fn thresholding_shared_private_and_serde() {
    let config = StructureConfig { aggregate: Aggregate::Max, threshold: 0.1 };
    // Scores in any unit: normalized by the largest (4.0) before the threshold.
    let s = ThoughtStructure::from_scores(vec![vec![4.0, 0.2, 1.0, 0.0], vec![2.0, 3.0, 0.3, 0.1]], &config);
    assert_eq!(s.b, vec![vec![true, false, true, false], vec![true, true, false, false]]);
    assert_eq!(s.alpha, vec![2, 1, 1, 0]);
    assert_eq!((s.num_agents(), s.num_latents()), (2, 4));
    assert_eq!(s.thoughts(0), vec![0, 2]);
    assert_eq!(s.shared(0), vec![0]);
    assert_eq!(s.private(0), vec![2]);
    assert_eq!(s.private(1), vec![1]);
    assert!(s.shared(5).is_empty(), "an unknown agent has no thoughts");
    let json = serde_json::to_string(&s).expect("serialize");
    assert!(json.contains("\"aggregate\":\"max\""), "{json}");
    assert_eq!(serde_json::from_str::<ThoughtStructure>(&json).expect("deserialize"), s);
}

#[test]
fn synthetic_structure_is_as_documented() {
    let data = generate(&SyntheticConfig { agents: 3, latent_dim: 10, samples: 50, seed: 4 }).expect("data");
    // Round robin over {all}, {0,1}, {0,2}, {1,2}, {0}, {1}, {2}: latents 7, 8, 9 wrap to all, {0,1}, {0,2}.
    let alpha: Vec<usize> = (0..10).map(|j| data.alpha(j)).collect();
    assert_eq!(alpha, vec![3, 2, 2, 2, 1, 1, 1, 3, 2, 2]);
    assert_eq!(data.states.block_sizes(), &[7, 6, 6]);
    let config = |latent_dim| SyntheticConfig { agents: 3, latent_dim, samples: 50, seed: 4 };
    assert_eq!(config(10).state_dim(), 19);
    assert_eq!([24, 128, 256].map(|k| config(k).state_dim()), [43, 221, 441], "the sizes the README quotes");
    // Rows only use their agent's thoughts, and for every latent the rows that use it share
    // nothing else (structural sparsity).
    let offsets = data.states.block_offsets();
    for (r, row) in data.row_support.iter().enumerate() {
        let agent = offsets.windows(2).position(|w| (r as i64) < w[1]).expect("row in a block");
        assert!(row.iter().enumerate().all(|(j, &used)| !used || data.true_b[agent][j]));
    }
    for j in 0..10 {
        let rows: Vec<&Vec<bool>> = data.row_support.iter().filter(|row| row[j]).collect();
        assert!(!rows.is_empty());
        let common: Vec<usize> = (0..10).filter(|&m| rows.iter().all(|row| row[m])).collect();
        assert_eq!(common, vec![j]);
    }
    assert!(generate(&SyntheticConfig { agents: 3, latent_dim: 6, samples: 50, seed: 0 }).is_err());
}
