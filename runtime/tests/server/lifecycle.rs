//! Slots and queues over a call's life: a cancelled stream or an expired deadline frees its batch
//! slot at the next step, a full queue answers RESOURCE_EXHAUSTED at once, and a graceful shutdown
//! lets in-flight calls finish while refusing new ones.
use std::time::{Duration, Instant};

use runtime::server::pb;
use tokio_stream::StreamExt;
use tonic::Code;

use super::harness::{endless, model_config, prompt, sampling, wait_for_load, TestServer, MODEL};

/// Far more tokens than a test waits for (minutes of decoding on a CPU).
const LONG: u32 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_stream_frees_its_slot() {
    // One slot: while the long stream holds it, nothing else can run.
    let server = TestServer::start(model_config(1, 8), None).await;
    let mut client = server.client(None).await;
    let agent = client.create_agent(MODEL, "", None).await.expect("CreateAgent").id;

    let mut stream = client.generate_stream(prompt(&agent, "Tell me a very long story.", endless(LONG))).await.expect("stream");
    let mut text = String::new();
    for i in 0..2 {
        match stream.next().await.expect("a message").expect("not an error").event {
            Some(pb::generate_stream_response::Event::Token(t)) => {
                assert_eq!(t.index, i);
                text.push_str(&t.text);
            }
            other => panic!("expected a token, got {other:?}"),
        }
    }
    wait_for_load(&mut client, "long stream running", |_, active| active == 1).await;
    drop(stream);

    let start = Instant::now();
    let reply = client.generate(prompt(&agent, "Hi", sampling(3))).await.expect("the next call runs");
    assert_eq!(reply.token_ids.len(), 3);
    let waited = start.elapsed();
    assert!(waited < Duration::from_secs(20), "the freed slot should be taken at once, took {waited:?}");
    wait_for_load(&mut client, "everything finished", |queued, active| queued == 0 && active == 0).await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_resource_exhausted_and_recovers() {
    let server = TestServer::start(model_config(1, 2), None).await;
    let mut client = server.client(None).await;
    let agent = client.create_agent(MODEL, "", None).await.expect("CreateAgent").id;

    // The slot: a long stream. The queue: two calls behind it.
    let mut hog = client.generate_stream(prompt(&agent, "Count to a thousand.", endless(LONG))).await.expect("stream");
    hog.next().await.expect("first token").expect("ok");
    let mut waiting = Vec::new();
    for i in 0..2 {
        let mut c = client.clone();
        let request = prompt(&agent, &format!("Say {i}."), sampling(2));
        waiting.push(tokio::spawn(async move { c.generate(request).await }));
    }
    wait_for_load(&mut client, "two calls queued", |queued, active| queued == 2 && active == 1).await;

    let start = Instant::now();
    let status = client.generate(prompt(&agent, "One more?", sampling(2))).await.expect_err("queue is full");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_queue = 2"), "{}", status.message());
    assert!(start.elapsed() < Duration::from_secs(2), "refused at once, took {:?}", start.elapsed());
    let status = client.generate_stream(prompt(&agent, "And a stream?", sampling(2))).await.expect_err("queue is full");
    assert_eq!(status.code(), Code::ResourceExhausted);

    drop(hog);
    for call in waiting {
        let reply = call.await.expect("task").expect("queued call completes once the slot frees");
        assert_eq!(reply.token_ids.len(), 2);
    }
    let reply = client.generate(prompt(&agent, "Now?", sampling(2))).await.expect("accepted again");
    assert_eq!(reply.token_ids.len(), 2);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_deadline_answers_deadline_exceeded_and_frees_the_slot() {
    let server = TestServer::start(model_config(1, 8), None).await;
    let mut client = server.client(None).await;
    let agent = client.create_agent(MODEL, "", None).await.expect("CreateAgent").id;

    let start = Instant::now();
    let request = prompt(&agent, "Write an essay.", endless(LONG));
    let status = client.generate_with_timeout(request, Duration::from_millis(1500)).await.expect_err("deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    wait_for_load(&mut client, "slot freed", |queued, active| queued == 0 && active == 0).await;

    // A stream with a deadline ends with DEADLINE_EXCEEDED after some tokens.
    let mut request = tonic::Request::new(prompt(&agent, "Write an essay.", endless(LONG)));
    request.set_timeout(Duration::from_millis(1500));
    let mut stream = client.inner().generate_stream(request).await.expect("stream starts").into_inner();
    let mut tokens = 0;
    let status = loop {
        match stream.next().await {
            Some(Ok(_)) => tokens += 1,
            Some(Err(status)) => break status,
            None => panic!("the stream ended without an error after {tokens} tokens"),
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?} after {tokens} tokens");
    wait_for_load(&mut client, "stream slot freed", |queued, active| queued == 0 && active == 0).await;
    let reply = client.generate(prompt(&agent, "Hi", sampling(2))).await.expect("serving");
    assert_eq!(reply.token_ids.len(), 2);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_calls_and_refuses_new_ones() {
    let mut server = TestServer::start(model_config(2, 8), None).await;
    let mut client = server.client(None).await;
    let agent = client.create_agent(MODEL, "", None).await.expect("CreateAgent").id;

    let mut calls = Vec::new();
    for i in 0..3 {
        let mut c = client.clone();
        let request = prompt(&agent, &format!("Name {i} colours."), endless(12));
        calls.push(tokio::spawn(async move { c.generate(request).await }));
    }
    let mut stream = client.generate_stream(prompt(&agent, "Name animals.", endless(12))).await.expect("stream");
    wait_for_load(&mut client, "all four calls in", |queued, active| queued + active == 4).await;

    server.trigger_shutdown();
    // In-flight calls (running and queued) complete normally.
    for call in calls {
        let reply = call.await.expect("task").expect("in-flight call completes during shutdown");
        assert_eq!(reply.token_ids.len(), 12);
    }
    let mut streamed = 0;
    let mut done = None;
    while let Some(message) = stream.next().await {
        match message.expect("stream completes during shutdown").event {
            Some(pb::generate_stream_response::Event::Token(_)) => streamed += 1,
            Some(pb::generate_stream_response::Event::Done(d)) => done = Some(d),
            None => panic!("empty message"),
        }
    }
    assert_eq!(streamed, 12);
    assert_eq!(done.expect("final message").token_ids.len(), 12);

    // New calls fail (UNAVAILABLE while draining, or no connection once stopped).
    let refused = client.generate(prompt(&agent, "Hi", sampling(2))).await;
    assert!(refused.is_err(), "a new call during shutdown must fail");
    let addr = server.addr.to_string();
    server.shutdown().await.expect("serve returns Ok after draining");
    assert!(runtime::server::client::RuntimeClient::connect(&addr, None).await.is_err(), "no longer listening");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_agent_does_not_starve_another() {
    let server = TestServer::start(model_config(1, 16), None).await;
    let mut client = server.client(None).await;
    let flood = client.create_agent(MODEL, "", None).await.expect("CreateAgent").id;
    let other = client.create_agent(MODEL, "", None).await.expect("CreateAgent").id;

    // Hold the only slot while the queue fills: six calls of one agent, then one of another.
    let mut hog = client.generate_stream(prompt(&flood, "Count to a thousand.", endless(LONG))).await.expect("stream");
    hog.next().await.expect("first token").expect("ok");
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let submit = |agent: &str, label: String, queued: u32| {
        let mut c = client.clone();
        let request = prompt(agent, &format!("Say {label}."), sampling(2));
        let done = done_tx.clone();
        tokio::spawn(async move {
            let reply = c.generate(request).await;
            let _ = done.send((label, reply.map(|r| r.token_ids.len())));
        });
        queued
    };
    for i in 0..6 {
        let queued = submit(&flood, format!("flood-{i}"), i + 1);
        wait_for_load(&mut client.clone(), "flood queued", move |q, _| q == queued).await;
    }
    submit(&other, "other".into(), 7);
    wait_for_load(&mut client.clone(), "all queued", |q, _| q == 7).await;
    drop(hog);

    let mut order = Vec::new();
    for _ in 0..7 {
        let (label, reply) = done_rx.recv().await.expect("a call finishes");
        assert_eq!(reply.expect("call succeeds"), 2);
        order.push(label);
    }
    // Round-robin admission: the other agent's call runs second, not after the whole flood.
    assert_eq!(order[..2], ["flood-0".to_string(), "other".to_string()], "completion order {order:?}");
    server.shutdown().await.expect("clean shutdown");
}
