//! 32 concurrent Generate calls from 4 agents, batched together by the model's engine thread,
//! return exactly the tokens of direct engine runs (a fresh `Engine`, one request at a time) with
//! the same prompts and seeds: greedy and sampled (temperature > 0 with a per-request seed).
use runtime::engine::{Engine, EngineConfig, SequenceRequest};
use runtime::generate::{FinishReason, SamplingParams};
use runtime::server::pb;
use runtime::tokenizer::ChatMessage;

use super::harness::{model_config, TestServer};

const AGENTS: [&str; 4] = [
    "You are a careful mathematician.",
    "You answer in one short sentence.",
    "You are a pirate.",
    "",
];

fn question(i: usize) -> String {
    format!("Question {i}: what is {} plus {}?", 3 * i + 1, 7 * i + 2)
}

/// Even requests sample (each with its own seed), odd ones are greedy.
fn sampling_of(i: usize) -> pb::SamplingParams {
    let max_new_tokens = Some(3 + (i % 3) as u32);
    if i.is_multiple_of(2) {
        pb::SamplingParams {
            max_new_tokens,
            temperature: Some(1.2),
            top_k: Some(200),
            top_p: Some(0.98),
            seed: Some(1000 + i as u64),
            ..Default::default()
        }
    } else {
        pb::SamplingParams { max_new_tokens, ..Default::default() }
    }
}

/// The engine's settings for request `i`, its seed shifted by `reseed`.
fn params_of(i: usize, reseed: u64, eos: &[u32]) -> SamplingParams {
    let s = sampling_of(i);
    SamplingParams {
        temperature: s.temperature.unwrap_or(0.0),
        top_k: s.top_k.unwrap_or(0) as usize,
        top_p: s.top_p.unwrap_or(1.0),
        seed: s.seed.unwrap_or(0) + reseed,
        max_new_tokens: s.max_new_tokens.unwrap_or(0) as usize,
        stop_token_ids: eos.to_vec(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_from_four_agents_equal_direct_engine_runs() {
    let start = std::time::Instant::now();
    let server = TestServer::start(model_config(8, 64), None).await;
    let mut client = server.client(None).await;
    let mut agents = Vec::new();
    for system in AGENTS {
        agents.push(client.create_agent(super::harness::MODEL, system, None).await.expect("CreateAgent").id);
    }
    let listed = client.list_agents("").await.expect("ListAgents");
    assert_eq!(listed.iter().map(|a| a.id.clone()).collect::<Vec<_>>(), agents);

    let mut calls = Vec::new();
    for i in 0..32 {
        let mut client = client.clone();
        let request = pb::GenerateRequest {
            agent_id: agents[i % 4].clone(),
            input: Some(pb::generate_request::Input::Prompt(question(i))),
            sampling: Some(sampling_of(i)),
            ..Default::default()
        };
        calls.push(tokio::spawn(async move { client.generate(request).await }));
    }
    let mut replies = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        replies.push(call.await.expect("task").unwrap_or_else(|e| panic!("call {i}: {e}")));
    }
    server.shutdown().await.expect("clean shutdown");
    eprintln!("32 calls served in {:.1} s", start.elapsed().as_secs_f64());
    let start = std::time::Instant::now();

    // The same requests, one at a time, on a fresh engine of a separately loaded model.
    let model = super::harness::load_model();
    let eos = model.tokenizer.eos_token_ids();
    let mut engine = Engine::new(&model.network, EngineConfig::default());
    for (i, reply) in replies.iter().enumerate() {
        let system = AGENTS[i % 4];
        let mut messages = Vec::new();
        if !system.is_empty() {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", question(i)));
        let prompt = model.tokenizer.encode_chat(&messages).expect("chat template");
        assert_eq!(reply.prompt_token_ids, prompt, "call {i}: prompt tokens");
        engine.add(SequenceRequest::new(prompt, params_of(i, 0, &eos))).expect("valid request");
        let (_, direct) = engine.run_to_completion().pop().expect("one output");
        assert_eq!(reply.token_ids, direct.tokens, "call {i} (agent {}): tokens differ from the direct engine run", i % 4);
        let finish = match direct.finish {
            FinishReason::Stop => pb::FinishReason::Stop,
            FinishReason::Length => pb::FinishReason::Length,
        };
        assert_eq!(reply.finish_reason, finish as i32, "call {i}: finish reason");
        assert_eq!(reply.text, model.tokenizer.decode(&direct.tokens, true).expect("decode"), "call {i}: text");
        let usage = reply.usage.expect("usage");
        assert_eq!(usage.completion_tokens as usize, reply.token_ids.len());
        assert_eq!(usage.prompt_tokens as usize, reply.prompt_token_ids.len());
        let timing = reply.timing.expect("timing");
        assert!(timing.queue_seconds >= 0.0 && timing.queue_seconds <= timing.time_to_first_token_seconds, "call {i}: {timing:?}");
        assert!(timing.time_to_first_token_seconds <= timing.total_seconds, "call {i}: {timing:?}");
    }
    eprintln!("32 direct engine runs in {:.1} s", start.elapsed().as_secs_f64());
    // The seed matters: other seeds give other tokens for some of the sampled calls.
    let mut reseeded_differs = false;
    for (i, reply) in replies.iter().enumerate().step_by(2).take(4) {
        let req = SequenceRequest::new(reply.prompt_token_ids.clone(), params_of(i, 7, &eos));
        engine.add(req).expect("valid request");
        let (_, other) = engine.run_to_completion().pop().expect("one output");
        reseeded_differs |= other.tokens != reply.token_ids;
    }
    assert!(reseeded_differs, "different seeds should change some sampled outputs");
}
