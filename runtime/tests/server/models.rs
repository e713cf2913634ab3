//! Models loaded while serving share the device with those loaded at start; stop strings end a
//! generation and cut its text.
use runtime::server::pb;

use super::harness::{model_config, prompt, sampling, TestServer, MODEL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_model_at_runtime_and_stop_strings() {
    let server = TestServer::start(model_config(4, 16), None).await;
    let mut client = server.client(None).await;

    // The same file by path is a second model with its own engine thread.
    let path = runtime::registry::models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let path = path.to_str().expect("utf-8 path").to_string();
    let info = client.load_model(&path, "cpu", "auto").await.expect("LoadModel");
    assert_eq!((info.name.as_str(), info.device.as_str(), info.dtype.as_str()), (path.as_str(), "cpu", "f32"));
    assert_eq!(info.weights, "dense");
    let names: Vec<String> = client.list_models().await.expect("ListModels").into_iter().map(|m| m.name).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&MODEL.to_string()) && names.contains(&path));

    let first = client.create_agent(MODEL, "", None).await.expect("agent on the first model").id;
    let second = client.create_agent(&path, "", None).await.expect("agent on the second model").id;
    assert_eq!(client.list_agents(&path).await.expect("ListAgents").len(), 1);
    let question = "Name three colours.";
    let (mut c1, mut c2) = (client.clone(), client.clone());
    let (a, b) = tokio::join!(
        c1.generate(prompt(&first, question, sampling(10))),
        c2.generate(prompt(&second, question, sampling(10)))
    );
    let (a, b) = (a.expect("first model"), b.expect("second model"));
    assert_eq!(a.model, MODEL);
    assert_eq!(b.model, path);
    assert_eq!(a.token_ids, b.token_ids, "the same weights give the same greedy tokens");

    // A stop string taken from the middle of that text ends generation there.
    let words: Vec<&str> = a.text.split_whitespace().collect();
    assert!(words.len() >= 3, "need a few words: {:?}", a.text);
    let stop = words[words.len() / 2].to_string();
    let cut_at = a.text.find(&stop).expect("in the text");
    let stopped = pb::SamplingParams { stop_strings: vec![stop.clone()], ..sampling(10) };
    let reply = client.generate(prompt(&first, question, stopped)).await.expect("Generate with a stop string");
    assert_eq!(reply.finish_reason, pb::FinishReason::Stop as i32, "{reply:?}");
    assert!(reply.token_ids.len() < a.token_ids.len(), "stopped early: {:?} vs {:?}", reply.token_ids, a.token_ids);
    assert_eq!(reply.token_ids[..], a.token_ids[..reply.token_ids.len()]);
    assert_eq!(reply.text, a.text[..cut_at], "text is cut before the stop string {stop:?}");
    server.shutdown().await.expect("clean shutdown");
}
