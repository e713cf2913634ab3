//! Thought communication through the runtime: a pipeline loaded next to the weights keeps each
//! agent's hidden state, ComposeThoughts turns a round's states into prefixes equal to what the
//! pipeline computes locally, a prefix id generates exactly as the same prefix sent as a tensor,
//! and every malformed thought request gets its status code.
use std::path::Path;

use runtime::server::pb;
use tch::{Device, Kind, Tensor};
use thoughtcomm::{
    AdapterConfig, AgentStates, Agreement, AutoencoderConfig, ComposeOptions, Estimator, PipelineAgent, PipelineManifest,
    PrefixAdapter, StructureConfig, ThoughtAutoencoder, ThoughtPipeline, ThoughtStructure, TrainConfig,
};
use tonic::Code;

use super::harness::{model_config, prompt, sampling, TestServer, MODEL};

const HIDDEN: i64 = 576;
const LAYER: u32 = 20;

/// A small pipeline for two agents on smollm2-135m (autoencoder fitted on noise: the test checks
/// the plumbing, not what the thoughts mean).
fn write_pipeline(dir: &Path, hidden_in_manifest: i64) {
    let states = AgentStates::from_concat(Tensor::randn([32, 2 * HIDDEN], (Kind::Float, Device::Cpu)), vec![HIDDEN; 2]).unwrap();
    let config = AutoencoderConfig { block_sizes: vec![HIDDEN; 2], latent_dim: 8, hidden: vec![32], lambda: 1e-3, estimator: Estimator::ColumnNorm };
    let mut ae = ThoughtAutoencoder::new(config, TrainConfig { batch_size: 16, learning_rate: 1e-3, seed: 2, jacobian_columns: None }).unwrap();
    ae.fit(&states, 10).unwrap();
    let structure = ThoughtStructure::recover(&ae, &states, &StructureConfig::default()).unwrap();
    let agents = (0..2).map(|_| PipelineAgent { model: MODEL.into(), hidden_size: hidden_in_manifest }).collect();
    let mut manifest = PipelineManifest::new(agents, LAYER);
    ae.save(&dir.join(&manifest.autoencoder)).unwrap();
    std::fs::write(dir.join(&manifest.structure), serde_json::to_string(&structure).unwrap()).unwrap();
    let adapter_config =
        AdapterConfig { num_agents: 2, latent_dim: 8, hidden_size: HIDDEN, prefix_len: 2, width: 16, agreement: Agreement::Learned, init_scale: 0.05 };
    let adapter = PrefixAdapter::new(adapter_config, &ae.encode(&states).unwrap(), 0, Device::Cpu).unwrap();
    let file = PipelineManifest::adapter_file(MODEL);
    adapter.save(&dir.join(&file)).unwrap();
    manifest.adapters.insert(MODEL.into(), file);
    manifest.write(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thoughts_are_kept_composed_and_injected_in_the_server() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path(), HIDDEN);
    let server = TestServer::start(model_config(4, 16), None).await;
    let mut client = server.client(None).await;
    let path = dir.path().display().to_string();
    let info = client.load_thought_pipeline("p", &path).await.expect("LoadThoughtPipeline");
    assert_eq!((info.agent_models.len(), info.layer, info.latent_dim, info.prefix_len), (2, LAYER, 8, 2));
    let again = client.load_thought_pipeline("p", &path).await.expect_err("loaded twice");
    assert_eq!(again.code(), Code::AlreadyExists);
    assert_eq!(client.thought_pipeline("p").await.unwrap().map(|p| p.path), Some(path.clone()));

    let agents = [
        client.create_agent(MODEL, "You solve.", Some(sampling(5))).await.unwrap().id,
        client.create_agent(MODEL, "You check.", Some(sampling(5))).await.unwrap().id,
    ];
    // Keep the state for the pipeline and also ask for it (plus another layer) in the response.
    let mut kept = Vec::new();
    let mut visible = Vec::new();
    let mut replies = Vec::new();
    for (a, id) in agents.iter().enumerate() {
        let request = pb::GenerateRequest {
            thought_pipeline: "p".into(),
            hidden_states: Some(pb::HiddenStatesRequest {
                layers: vec![3, LAYER],
                points: vec![pb::CapturePoint::LastGeneratedToken as i32],
            }),
            ..prompt(id, &format!("What is {} + 2?", a + 1), sampling(5))
        };
        let reply = client.generate(request).await.expect("Generate keeping a state");
        assert!(reply.thought_state_id.starts_with("state-"), "{:?}", reply.thought_state_id);
        assert_eq!(reply.hidden_states.len(), 1, "only the requested point comes back");
        let states = runtime::server::convert::tensor_from_wire(reply.hidden_states[0].states.as_ref().unwrap()).unwrap();
        assert_eq!(states.size(), [2, HIDDEN]);
        visible.push(states.get(1));
        kept.push(reply.thought_state_id.clone());
        replies.push(reply);
    }
    // A keep-only call returns no hidden states.
    let only_keep = pb::GenerateRequest { thought_pipeline: "p".into(), ..prompt(&agents[0], "Hi", sampling(2)) };
    assert!(client.generate(only_keep).await.unwrap().hidden_states.is_empty());

    let compose = |ids: Vec<String>| pb::ComposeThoughtsRequest { pipeline: "p".into(), state_ids: ids, ..Default::default() };
    let reply = client.compose_thoughts(compose(kept.clone())).await.expect("ComposeThoughts");
    assert_eq!(reply.agents.len(), 2);
    // The server composed from the very states it returned: same prefixes as the pipeline here.
    let local = ThoughtPipeline::load(dir.path(), Device::Cpu).unwrap();
    let expected = local.compose(&visible, &ComposeOptions::default()).unwrap();
    for (a, (got, want)) in reply.agents.iter().zip(&expected.agents).enumerate() {
        assert!((got.prefix_norm - want.prefix_norm).abs() < 1e-4, "agent {a}: prefix norm {} vs {}", got.prefix_norm, want.prefix_norm);
        assert!((got.thought_norm - want.thought_norm).abs() < 1e-4, "agent {a}: thought norm {} vs {}", got.thought_norm, want.thought_norm);
        assert_eq!((got.shared_thoughts as usize, got.private_thoughts as usize), (want.shared, want.private));
        assert_eq!(got.agreement_weights.len(), 3);
    }
    assert!((reply.state_cosine - expected.state_cosine.unwrap()).abs() < 1e-4);

    // A recorded reply fed back (teacher forcing) gives the state it was generated with, in one
    // prefill instead of a decode step per token, and composes to the same prefixes.
    let generated = &replies[0];
    let forced = pb::ForcedReply { text: generated.text.clone(), stopped: generated.finish_reason == pb::FinishReason::Stop as i32 };
    let replay = |forced: pb::ForcedReply, points: Vec<i32>| pb::GenerateRequest {
        thought_pipeline: "p".into(),
        hidden_states: Some(pb::HiddenStatesRequest { layers: vec![3, LAYER], points }),
        forced_reply: Some(forced),
        ..prompt(&agents[0], "What is 1 + 2?", sampling(5))
    };
    let replayed = client.generate(replay(forced.clone(), vec![pb::CapturePoint::LastGeneratedToken as i32])).await.expect("forced reply");
    assert_eq!((&replayed.token_ids, &replayed.text), (&generated.token_ids, &generated.text));
    assert_eq!((replayed.finish_reason, replayed.usage, replayed.prompt_token_ids.len()), (generated.finish_reason, generated.usage, generated.prompt_token_ids.len()));
    assert_eq!(replayed.hidden_states[0].point, pb::CapturePoint::LastGeneratedToken as i32);
    let states = runtime::server::convert::tensor_from_wire(replayed.hidden_states[0].states.as_ref().unwrap()).unwrap();
    let scale = visible[0].abs().max().double_value(&[]);
    let diff = (states.get(1) - &visible[0]).abs().max().double_value(&[]);
    assert!(diff < 1e-3 * scale, "replayed state differs by {diff} (scale {scale})");
    let recomposed = client.compose_thoughts(compose(vec![replayed.thought_state_id.clone(), kept[1].clone()])).await.unwrap();
    for (got, want) in recomposed.agents.iter().zip(&reply.agents) {
        assert!((got.prefix_norm - want.prefix_norm).abs() < 1e-3 * want.prefix_norm, "{} vs {}", got.prefix_norm, want.prefix_norm);
    }
    let at_prompt = client.generate(replay(forced, vec![pb::CapturePoint::LastPromptToken as i32])).await.unwrap_err();
    assert!(at_prompt.code() == Code::InvalidArgument && at_prompt.message().contains("forced_reply"), "{}", at_prompt.message());
    let empty = client.generate(replay(pb::ForcedReply::default(), vec![pb::CapturePoint::LastGeneratedToken as i32])).await.unwrap_err();
    assert!(empty.code() == Code::InvalidArgument && empty.message().contains("empty"), "{}", empty.message());

    // A prefix id generates exactly as the same prefix sent as a tensor.
    let by_id = pb::GenerateRequest { prefix_id: reply.agents[1].prefix_id.clone(), ..prompt(&agents[1], "What is 3 + 4?", sampling(6)) };
    let by_id = client.generate(by_id).await.expect("Generate with prefix_id");
    assert_eq!(by_id.usage.as_ref().unwrap().prefix_positions, 2);
    let tensor = runtime::server::convert::tensor_to_proto(&expected.prefixes[1]);
    let by_tensor = pb::GenerateRequest { prefix_embeddings: Some(tensor.clone()), ..prompt(&agents[1], "What is 3 + 4?", sampling(6)) };
    assert_eq!(client.generate(by_tensor).await.unwrap().token_ids, by_id.token_ids);

    // Ablations are served.
    let ablated = pb::ComposeThoughtsRequest {
        routing: pb::ThoughtRouting::All as i32,
        agreement: pb::AgreementWeights::None as i32,
        random_latents: true,
        seed: 4,
        ..compose(kept.clone())
    };
    let ablated = client.compose_thoughts(ablated).await.expect("ablated ComposeThoughts");
    assert_eq!(ablated.agents[0].agreement_weights, vec![1.0, 1.0, 1.0]);
    assert!((ablated.agents[0].prefix_norm - reply.agents[0].prefix_norm).abs() > 1e-6);

    // Malformed thought requests.
    let code = |s: tonic::Status| (s.code(), s.message().to_string());
    let (c, m) = code(client.compose_thoughts(compose(kept[..1].to_vec())).await.unwrap_err());
    assert!(c == Code::InvalidArgument && m.contains("2 agents"), "{m}");
    let (c, m) = code(client.compose_thoughts(compose(vec![kept[0].clone(), "state-999999".into()])).await.unwrap_err());
    assert!(c == Code::NotFound && m.contains("state-999999"), "{m}");
    let swapped = client.compose_thoughts(compose(vec![kept[1].clone(), "prefix-1".into()])).await.unwrap_err();
    assert_eq!(swapped.code(), Code::NotFound);
    let (c, m) = code(client.compose_thoughts(pb::ComposeThoughtsRequest { pipeline: "q".into(), ..compose(kept.clone()) }).await.unwrap_err());
    assert!(c == Code::NotFound && m.contains("'q'"), "{m}");
    let bad_enum = pb::ComposeThoughtsRequest { routing: 77, ..compose(kept.clone()) };
    assert_eq!(client.compose_thoughts(bad_enum).await.unwrap_err().code(), Code::InvalidArgument);
    let unknown = pb::GenerateRequest { thought_pipeline: "q".into(), ..prompt(&agents[0], "Hi", sampling(2)) };
    assert_eq!(client.generate(unknown).await.unwrap_err().code(), Code::NotFound);
    let unknown = pb::GenerateRequest { prefix_id: "prefix-424242".into(), ..prompt(&agents[0], "Hi", sampling(2)) };
    assert_eq!(client.generate(unknown).await.unwrap_err().code(), Code::NotFound);
    let both = pb::GenerateRequest { prefix_id: reply.agents[0].prefix_id.clone(), prefix_embeddings: Some(tensor), ..prompt(&agents[0], "Hi", sampling(2)) };
    let (c, m) = code(client.generate(both).await.unwrap_err());
    assert!(c == Code::InvalidArgument && m.contains("not both"), "{m}");

    // A pipeline trained for another hidden size, or a folder without one, is refused at load.
    let wrong = tempfile::tempdir().unwrap();
    write_pipeline(wrong.path(), HIDDEN + 1);
    let (c, m) = code(client.load_thought_pipeline("wrong", &wrong.path().display().to_string()).await.unwrap_err());
    assert!(c == Code::InvalidArgument && m.contains("hidden size 577"), "{m}");
    let empty = tempfile::tempdir().unwrap();
    let (c, m) = code(client.load_thought_pipeline("", &empty.path().display().to_string()).await.unwrap_err());
    assert!(c == Code::InvalidArgument && m.contains("manifest.json"), "{m}");
    // The server still serves.
    client.generate(prompt(&agents[0], "Still there?", sampling(2))).await.expect("serving after the errors");
    server.shutdown().await.expect("clean shutdown");
}
