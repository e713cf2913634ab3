//! Routing with agreement: each agent receives exactly its own thoughts, weighted by their
//! agreement level; the ablation routes everything to everyone.
use tch::{Kind, Tensor};
use thoughtcomm::routing::fixed_agreement_weights;
use thoughtcomm::{Aggregate, Agreement, Routing, RoutingPlan, StructureConfig, ThoughtStructure};

/// 3 agents, 5 latents: 0 shared by all, 1 by agents 0 and 1, 2 private to 0, 3 private to 2,
/// 4 used by nobody.
fn structure() -> ThoughtStructure {
    let on = 1.0;
    let scores = vec![vec![on, on, on, 0.0, 0.0], vec![on, on, 0.0, 0.0, 0.0], vec![on, 0.0, 0.0, on, 0.0]];
    ThoughtStructure::from_scores(scores, &StructureConfig { aggregate: Aggregate::Max, threshold: 0.5 })
}

#[test]
fn agents_receive_their_own_thoughts_weighted_by_agreement() {
    let s = structure();
    assert_eq!(s.alpha, vec![3, 2, 1, 1, 0]);
    let plan = RoutingPlan::new(&s, Routing::Routed);
    assert_eq!((plan.shared_count(0), plan.private_count(0)), (2, 1));
    assert_eq!((plan.shared_count(1), plan.private_count(1)), (2, 0));
    assert_eq!((plan.shared_count(2), plan.private_count(2)), (1, 1));

    let z = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0]);
    let w = fixed_agreement_weights(3);
    assert_eq!(Vec::<f32>::try_from(&w).unwrap(), vec![0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
    let routed = plan.route(&z, &w).unwrap();
    assert_eq!(routed.size(), [3, 5]);
    let rows: Vec<Vec<f32>> = (0..3).map(|i| Vec::<f32>::try_from(routed.get(i)).unwrap()).collect();
    let third = 1.0f32 / 3.0;
    let expect = [
        vec![1.0, 2.0 * 2.0 * third, 3.0 * third, 0.0, 0.0],
        vec![1.0, 2.0 * 2.0 * third, 0.0, 0.0, 0.0],
        vec![1.0, 0.0, 0.0, 4.0 * third, 0.0],
    ];
    for (row, want) in rows.iter().zip(&expect) {
        for (a, b) in row.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{row:?} vs {want:?}");
        }
    }

    // No routing: every agent gets every thought, still weighted by agreement.
    let all = RoutingPlan::new(&s, Routing::All).route(&z, &w).unwrap();
    for i in 0..3 {
        let row = Vec::<f32>::try_from(all.get(i)).unwrap();
        assert!((row[3] - 4.0 * third).abs() < 1e-6 && row[4] == 0.0, "{row:?}");
    }
    // Weights of one: the routed latents unchanged.
    let ones = plan.route(&z, &w.ones_like()).unwrap();
    assert_eq!(Vec::<f32>::try_from(ones.get(2)).unwrap(), vec![1.0, 0.0, 0.0, 4.0, 0.0]);
}

#[test]
fn routing_is_differentiable_in_latents_and_weights_and_checks_shapes() {
    let plan = RoutingPlan::new(&structure(), Routing::Routed);
    let z = Tensor::from_slice(&[1.0f32, -1.0, 0.5, 2.0, 3.0]).set_requires_grad(true);
    let w = fixed_agreement_weights(3).set_requires_grad(true);
    let routed = plan.route(&z, &w).unwrap();
    routed.sum(Kind::Float).backward();
    // dz_j = sum over agents receiving j of w[alpha_j].
    let dz = Vec::<f32>::try_from(z.grad()).unwrap();
    let t = 1.0f32 / 3.0;
    let want = [3.0, 2.0 * 2.0 * t, t, t, 0.0];
    dz.iter().zip(want).for_each(|(a, b)| assert!((a - b).abs() < 1e-6, "{dz:?}"));
    let dw = Vec::<f32>::try_from(w.grad()).unwrap();
    // Level 3: latent 0 in three rows (z = 1); level 2: latent 1 in two rows (z = -1); level 1:
    // latent 2 once (0.5) and latent 3 once (2).
    assert_eq!(dw, vec![0.0, 2.5, -2.0, 3.0]);

    let err = plan.route(&Tensor::zeros([4], (Kind::Float, tch::Device::Cpu)), &w).unwrap_err().to_string();
    assert!(err.contains("expected 5"), "{err}");
    let err = plan.route(&z, &Tensor::zeros([3], (Kind::Float, tch::Device::Cpu))).unwrap_err().to_string();
    assert!(err.contains("agreement weights"), "{err}");
    assert!("sideways".parse::<Routing>().unwrap_err().to_string().contains("routed, all"));
    assert_eq!("none".parse::<Agreement>().unwrap(), Agreement::None);
}
