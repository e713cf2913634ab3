//! Malformed requests get INVALID_ARGUMENT (unknown agents NOT_FOUND) with a message naming the
//! value and the limit, before anything is queued, and the server keeps serving; a configured
//! bearer token is enforced; prefix embeddings and hidden states travel as tensors.
use runtime::server::client::RuntimeClient;
use runtime::server::pb;
use tonic::Code;

use super::harness::{model_config, prompt, sampling, TestServer, MODEL};

fn tensor_f32(values: &[f32], shape: &[i64]) -> pb::Tensor {
    pb::Tensor {
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        shape: shape.to_vec(),
        dtype: pb::DType::DtypeF32 as i32,
    }
}

async fn expect_code(client: &mut RuntimeClient, what: &str, request: pb::GenerateRequest, code: Code, needle: &str) {
    let status = client.generate(request.clone()).await.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
    assert!(status.message().contains(needle), "{what}: message {:?} should mention {needle:?}", status.message());
    // The streaming call validates the same way, before the stream starts.
    let status = client.generate_stream(request).await.expect_err(what);
    assert_eq!(status.code(), code, "{what} (stream): {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_and_the_server_keeps_serving() {
    let server = TestServer::start(model_config(4, 16), None).await;
    let mut client = server.client(None).await;
    let info = client.list_models().await.expect("ListModels").remove(0);
    let (context, hidden, vocab, layers) = (info.context_length, info.hidden_size, info.vocab_size, info.num_layers);
    let agent = client.create_agent(MODEL, "Be brief.", Some(sampling(3))).await.expect("CreateAgent").id;
    let ok = |text: &str| prompt(&agent, text, sampling(3));
    let invalid = Code::InvalidArgument;

    expect_code(&mut client, "empty prompt", ok(""), invalid, "empty").await;
    let none = pb::GenerateRequest { input: None, ..ok("x") };
    expect_code(&mut client, "no input", none, invalid, "input").await;
    let no_ids = pb::GenerateRequest { input: Some(pb::generate_request::Input::TokenIds(pb::TokenIds { ids: vec![] })), ..ok("x") };
    expect_code(&mut client, "empty token ids", no_ids, invalid, "empty").await;
    expect_code(&mut client, "unknown agent", prompt("agent-999", "Hi", sampling(3)), Code::NotFound, "agent-999").await;
    expect_code(&mut client, "max_new_tokens 0", prompt(&agent, "Hi", sampling(0)), invalid, "max_new_tokens").await;
    let over = (context + 10) as u32;
    expect_code(&mut client, "max_new_tokens over the context", prompt(&agent, "Hi", sampling(over)), invalid, &context.to_string()).await;
    let long = pb::GenerateRequest {
        input: Some(pb::generate_request::Input::TokenIds(pb::TokenIds { ids: vec![42; context as usize + 1] })),
        ..ok("x")
    };
    expect_code(&mut client, "prompt longer than the context", long, invalid, &context.to_string()).await;
    let out_of_vocab = pb::GenerateRequest {
        input: Some(pb::generate_request::Input::TokenIds(pb::TokenIds { ids: vec![1, vocab as u32 + 5] })),
        ..ok("x")
    };
    expect_code(&mut client, "token id outside the vocabulary", out_of_vocab, invalid, &vocab.to_string()).await;
    let hot = pb::SamplingParams { temperature: Some(-1.0), ..sampling(3) };
    expect_code(&mut client, "negative temperature", prompt(&agent, "Hi", hot), invalid, "temperature").await;
    let top_p = pb::SamplingParams { top_p: Some(0.0), ..sampling(3) };
    expect_code(&mut client, "top_p 0", prompt(&agent, "Hi", top_p), invalid, "top_p").await;

    // Prefix embeddings: wrong shape, unset or unknown dtype, byte length not matching the shape,
    // non-finite values.
    let with_prefix = |t: pb::Tensor| pb::GenerateRequest { prefix_embeddings: Some(t), ..ok("Hi") };
    let wrong_width = tensor_f32(&[0.1; 2 * 7], &[2, 7]);
    expect_code(&mut client, "prefix of the wrong shape", with_prefix(wrong_width), invalid, &hidden.to_string()).await;
    let flat = tensor_f32(&vec![0.1; hidden as usize], &[hidden]);
    expect_code(&mut client, "1-d prefix", with_prefix(flat), invalid, "shape").await;
    let unset = pb::Tensor { dtype: pb::DType::DtypeUnspecified as i32, ..tensor_f32(&vec![0.1; hidden as usize], &[1, hidden]) };
    expect_code(&mut client, "prefix without dtype", with_prefix(unset), invalid, "dtype").await;
    let unknown = pb::Tensor { dtype: 77, ..tensor_f32(&vec![0.1; hidden as usize], &[1, hidden]) };
    expect_code(&mut client, "prefix of an unknown dtype", with_prefix(unknown), invalid, "dtype").await;
    let short = tensor_f32(&vec![0.1; hidden as usize - 1], &[1, hidden]);
    expect_code(&mut client, "prefix bytes shorter than the shape", with_prefix(short), invalid, "bytes").await;
    let bf16_as_f32 = pb::Tensor { dtype: pb::DType::DtypeBf16 as i32, ..tensor_f32(&vec![0.1; hidden as usize], &[1, hidden]) };
    expect_code(&mut client, "f32 bytes labelled bf16", with_prefix(bf16_as_f32), invalid, "bytes").await;
    let mut values = vec![0.1; hidden as usize];
    values[3] = f32::NAN;
    expect_code(&mut client, "NaN in the prefix", with_prefix(tensor_f32(&values, &[1, hidden])), invalid, "finite").await;
    let negative = pb::Tensor { shape: vec![-1, hidden], ..tensor_f32(&[], &[0]) };
    expect_code(&mut client, "negative dimension", with_prefix(negative), invalid, "negative").await;
    let huge = pb::Tensor { shape: vec![i64::MAX, i64::MAX], ..tensor_f32(&[], &[0]) };
    expect_code(&mut client, "overflowing shape", with_prefix(huge), invalid, "too large").await;

    // Hidden states: a layer past the last, an unset capture point.
    let capture = |layers: Vec<u32>, points: Vec<i32>| pb::GenerateRequest {
        hidden_states: Some(pb::HiddenStatesRequest { layers, points }),
        ..ok("Hi")
    };
    let point = pb::CapturePoint::LastPromptToken as i32;
    expect_code(&mut client, "capture layer out of range", capture(vec![layers as u32 + 1], vec![point]), invalid, "layer").await;
    expect_code(&mut client, "unset capture point", capture(vec![1], vec![0]), invalid, "capture point").await;

    // Agents and models.
    let status = client.create_agent("no-such-model", "", None).await.expect_err("unknown model");
    assert_eq!(status.code(), invalid, "{status:?}");
    assert!(status.message().contains("no-such-model") && status.message().contains(MODEL), "{}", status.message());
    let bad_defaults = pb::SamplingParams { top_p: Some(2.0), ..Default::default() };
    let status = client.create_agent(MODEL, "", Some(bad_defaults)).await.expect_err("bad default sampling");
    assert_eq!(status.code(), invalid, "{status:?}");
    let status = client.delete_agent("agent-999").await.expect_err("unknown agent");
    assert_eq!(status.code(), Code::NotFound);
    let status = client.load_model("/no/such/model.gguf", "", "").await.expect_err("unknown model file");
    assert_eq!(status.code(), invalid, "{status:?}");
    let status = client.load_model(MODEL, "", "").await.expect_err("already loaded");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    // Still serving: a well-formed call with a prefix and hidden states works.
    let request = pb::GenerateRequest {
        prefix_embeddings: Some(tensor_f32(&vec![0.01; 2 * hidden as usize], &[2, hidden])),
        hidden_states: Some(pb::HiddenStatesRequest {
            layers: vec![0, layers as u32],
            points: vec![pb::CapturePoint::LastPromptToken as i32, pb::CapturePoint::MeanGenerated as i32],
        }),
        ..ok("What is 2 + 2?")
    };
    let reply = client.generate(request).await.expect("valid call after the bad ones");
    assert_eq!(reply.token_ids.len(), 3);
    assert_eq!(reply.usage.as_ref().map(|u| u.prefix_positions), Some(2));
    assert_eq!(reply.hidden_states.len(), 2);
    for h in &reply.hidden_states {
        assert_eq!(h.layers, vec![0, layers as u32]);
        let t = runtime::server::convert::tensor_from_wire(h.states.as_ref().expect("states")).expect("decodes");
        assert_eq!(t.size(), vec![2, hidden]);
    }
    assert_eq!(reply.hidden_states[0].point, pb::CapturePoint::LastPromptToken as i32);
    client.delete_agent(&agent).await.expect("DeleteAgent");
    let status = client.generate(ok("Hi")).await.expect_err("deleted agent");
    assert_eq!(status.code(), Code::NotFound);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_bearer_token_is_required() {
    let server = TestServer::start(model_config(2, 8), Some("s3cret")).await;
    for token in [None, Some("wrong"), Some("s3cret-but-longer")] {
        let mut client = server.client(token).await;
        let status = client.list_models().await.expect_err("no access without the token");
        assert_eq!(status.code(), Code::Unauthenticated, "token {token:?}: {status:?}");
        let status = client.generate(prompt("agent-1", "Hi", sampling(2))).await.expect_err("no access");
        assert_eq!(status.code(), Code::Unauthenticated, "token {token:?}: {status:?}");
        assert!(client.is_serving().await.expect("health needs no token"));
    }
    let mut client = server.client(Some("s3cret")).await;
    let agent = client.create_agent(MODEL, "", None).await.expect("CreateAgent with the token").id;
    let reply = client.generate(prompt(&agent, "Hi", sampling(2))).await.expect("Generate with the token");
    assert_eq!(reply.token_ids.len(), 2);
    server.shutdown().await.expect("clean shutdown");
}
