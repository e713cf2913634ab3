#!/usr/bin/env python3
"""Checks a ThoughtComm runtime from Python, with stubs generated from the .proto alone.

Generates Python stubs for proto/thoughtcomm/runtime/v1/runtime.proto (and the standard
grpc.health.v1 health service) with grpc_tools.protoc into a temporary folder, then against the
server: health is SERVING, ListModels lists the model, CreateAgent, Generate and GenerateStream
work. Prints OK and exits 0, or prints what failed and exits 1.

    .venv/bin/python scripts/grpc_client_check.py --address 127.0.0.1:50051 [--token T]
    .venv/bin/python scripts/grpc_client_check.py --spawn      # starts target/release/tcomm serve

With --spawn it writes a minimal runtime.toml, starts `target/release/tcomm serve` on a free
loopback port (source scripts/env.sh first so libtorch is found), runs the checks, then stops the
server with SIGTERM and checks that it exits 0.
"""
import argparse
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
RUNTIME_PROTO = "thoughtcomm/runtime/v1/runtime.proto"

# The standard health service (grpc/health/v1/health.proto, Check only). Compiled under another
# file path because `grpc` is the grpcio package's own module.
HEALTH_PROTO = """
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
"""


def fail(message):
    print(f"FAILED: {message}", flush=True)
    sys.exit(1)


def generate_stubs(out_dir: pathlib.Path):
    """Runs grpc_tools.protoc on the .proto files; returns the imported modules."""
    import grpc_tools
    from grpc_tools import protoc

    health_dir = out_dir / "src" / "tcomm_health"
    health_dir.mkdir(parents=True)
    (health_dir / "health.proto").write_text(HEALTH_PROTO)
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{out_dir / 'src'}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        RUNTIME_PROTO,
        "tcomm_health/health.proto",
    ]
    if protoc.main(args) != 0:
        fail(f"grpc_tools.protoc failed on {RUNTIME_PROTO}")
    sys.path.insert(0, str(out_dir))
    from thoughtcomm.runtime.v1 import runtime_pb2, runtime_pb2_grpc
    from tcomm_health import health_pb2, health_pb2_grpc

    return runtime_pb2, runtime_pb2_grpc, health_pb2, health_pb2_grpc


def check(address, token, model, timeout, stubs):
    import grpc

    pb, rpc, health_pb, health_rpc = stubs
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            fail(f"no server at {address} after {timeout} s")
        status = health_rpc.HealthStub(channel).Check(health_pb.HealthCheckRequest(service=""), timeout=timeout)
        if status.status != health_pb.HealthCheckResponse.SERVING:
            fail(f"health is {health_pb.HealthCheckResponse.ServingStatus.Name(status.status)}, expected SERVING")
        print(f"health: SERVING")

        stub = rpc.RuntimeServiceStub(channel)
        models = stub.ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=timeout).models
        names = [m.name for m in models]
        if not names:
            fail("ListModels returned no model")
        name = model or names[0]
        if name not in names:
            fail(f"model {name!r} is not loaded (loaded: {names})")
        info = next(m for m in models if m.name == name)
        print(f"models: {names} ({name}: {info.architecture}, context {info.context_length}, device {info.device})")

        agent = stub.CreateAgent(
            pb.CreateAgentRequest(model=name, system_prompt="You are a helpful assistant.", name="python-check"),
            metadata=metadata,
            timeout=timeout,
        ).agent
        print(f"agent: {agent.id} on {agent.model}")

        request = pb.GenerateRequest(
            agent_id=agent.id,
            prompt="What is 2 + 3?",
            sampling=pb.SamplingParams(max_new_tokens=8, temperature=0.7, seed=11),
        )
        reply = stub.Generate(request, metadata=metadata, timeout=timeout)
        if not reply.token_ids or len(reply.token_ids) > 8:
            fail(f"Generate returned {len(reply.token_ids)} tokens, expected 1..8")
        if reply.finish_reason == pb.FINISH_REASON_UNSPECIFIED:
            fail("Generate returned no finish reason")
        if reply.usage.completion_tokens != len(reply.token_ids) or reply.timing.total_seconds <= 0:
            fail(f"bad usage/timing: {reply.usage} {reply.timing}")
        print(f"generate: {len(reply.token_ids)} tokens, {reply.text!r}, {reply.timing.total_seconds:.3f} s")

        tokens, done = [], None
        for message in stub.GenerateStream(request, metadata=metadata, timeout=timeout):
            if message.HasField("token"):
                tokens.append(message.token.token_id)
            else:
                done = message.done
        if done is None or list(done.token_ids) != tokens or tokens != list(reply.token_ids):
            fail(f"GenerateStream tokens {tokens} do not match Generate's {list(reply.token_ids)} (same seed)")
        print(f"stream: {len(tokens)} tokens, same as Generate")

        try:
            stub.Generate(pb.GenerateRequest(agent_id=agent.id, prompt=""), metadata=metadata, timeout=timeout)
            fail("an empty prompt was accepted")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                fail(f"an empty prompt gave {e.code()}, expected INVALID_ARGUMENT")
        stub.DeleteAgent(pb.DeleteAgentRequest(agent_id=agent.id), metadata=metadata, timeout=timeout)


def spawn_server(binary: pathlib.Path, model, tmp: pathlib.Path, timeout):
    if not binary.exists():
        fail(f"{binary} does not exist: build it with `cargo build --release -p experiments`")
    config = tmp / "runtime.toml"
    config.write_text(f'bind = "127.0.0.1:0"\n\n[[models]]\nname = "{model}"\nmax_batch_size = 4\n')
    proc = subprocess.Popen(
        [str(binary), "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            fail(f"tcomm serve exited with {proc.wait()} before listening")
        if line.startswith("listening on "):
            return proc, line.split("listening on ", 1)[1].strip()
    proc.kill()
    fail(f"tcomm serve did not start within {timeout} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="127.0.0.1:50051", help="host:port of a running server")
    parser.add_argument("--token", default=os.environ.get("TCOMM_AUTH_TOKEN"), help="bearer token, if the server has one")
    parser.add_argument("--model", default=None, help="model to use (default: the first listed; with --spawn: smollm2-135m)")
    parser.add_argument("--spawn", action="store_true", help="start target/release/tcomm serve itself")
    parser.add_argument(
        "--binary", type=pathlib.Path, default=ROOT / "target" / "release" / "tcomm", help="the tcomm that --spawn starts"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for each step")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tcomm-grpc-check-") as tmp:
        tmp = pathlib.Path(tmp)
        stubs = generate_stubs(tmp / "stubs")
        if not args.spawn:
            check(args.address, args.token, args.model, args.timeout, stubs)
        else:
            model = args.model or "smollm2-135m"
            proc, address = spawn_server(args.binary, model, tmp, args.timeout)
            try:
                check(address, None, model, args.timeout, stubs)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    fail("tcomm serve did not stop after SIGTERM")
            if code != 0:
                fail(f"tcomm serve exited with {code} after SIGTERM, expected 0")
            print("server: stopped cleanly on SIGTERM")
    print("OK", flush=True)


if __name__ == "__main__":
    main()
