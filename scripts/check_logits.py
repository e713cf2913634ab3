#!/usr/bin/env python3
"""Compare tcomm's last-position logits for one text against transformers'.

Check script only -- never on the product's run path.

Usage:
    .venv/bin/python scripts/check_logits.py --model NAME|PATH --text TEXT [--tcomm BINARY]
                                            [--top-k 10] [--atol 2e-3] [--transformers-only] [--json]
                                            [--tcomm-device cuda]

--model  a registry name (smollm2-135m, gemma3-270m, qwen2.5-0.5b -> models/*.gguf), a path to a
         .gguf file, or a HF checkpoint folder (must have a tokenizer).
--tcomm  the tcomm binary; default target/release/tcomm, else target/debug/tcomm.  It is run as
             tcomm logits --model M --text T --top-k K --json --device D --dtype f32
         with M the path of the .gguf file / folder (override with --tcomm-model), and must print
         ONE JSON object on stdout: {"token_ids": [...], "top": [{"id": N, "logit": X}, ...]}.

Verdict (last line, starts with "VERDICT:"), exit code 0 on PASS, 1 otherwise:
  * token ids identical,
  * top-k ids identical and in the same order -- except that two entries whose transformers
    logits differ by <= atol may appear swapped (near-tie; reported),
  * max |logit diff| over the top-k ids <= atol.
Without a tcomm binary the transformers result is printed and the verdict is SKIP (exit 1,
or exit 0 with --transformers-only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_common as rc  # noqa: E402


def find_tcomm(explicit: str | None) -> str | None:
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    for p in ("target/release/tcomm", "target/debug/tcomm"):
        full = os.path.join(rc.REPO, p)
        if os.path.isfile(full) and os.access(full, os.X_OK):
            return full
    return None


def parse_tcomm_stdout(stdout: str) -> dict:
    s = stdout.strip()
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        pass
    for line in reversed(s.splitlines()):  # tolerate log lines before the object
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON object in tcomm output")


def run_tcomm(binary: str, model_arg: str, text: str, k: int, timeout: float, device: str) -> dict:
    cmd = [binary, "logits", "--model", model_arg, "--text", text, "--top-k", str(k), "--json"]
    cmd += ["--device", device, "--dtype", "f32"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"tcomm exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    d = parse_tcomm_stdout(p.stdout)
    if not isinstance(d.get("token_ids"), list) or not isinstance(d.get("top"), list):
        raise ValueError(f"tcomm JSON lacks token_ids/top: {str(d)[:500]}")
    return d


def compare(hf: dict, tc: dict, atol: float) -> tuple[bool, list[str], float]:
    """(ok, problems, max_abs_diff)."""
    problems: list[str] = []
    if list(hf["token_ids"]) != [int(x) for x in tc["token_ids"]]:
        problems.append(f"token ids differ: transformers {hf['token_ids']} vs tcomm {tc['token_ids']}")
        return False, problems, float("nan")

    hf_top = [(int(e["id"]), float(e["logit"])) for e in hf["top"]]
    tc_top = [(int(e["id"]), float(e["logit"])) for e in tc["top"]]
    if len(tc_top) < len(hf_top):
        problems.append(f"tcomm returned {len(tc_top)} top entries, expected {len(hf_top)}")
    hf_logit = dict(hf_top)
    tc_logit = dict(tc_top)

    # max |diff| over ids both lists contain
    common = [i for i, _ in hf_top if i in tc_logit]
    max_diff = max((abs(hf_logit[i] - tc_logit[i]) for i in common), default=float("nan"))

    hf_ids = [i for i, _ in hf_top]
    tc_ids = [i for i, _ in tc_top[: len(hf_top)]]
    if hf_ids != tc_ids:
        if set(hf_ids) == set(tc_ids):
            # same set, different order: allowed only between near-ties in the transformers logits
            bad = [
                (a, b)
                for pos, (a, b) in enumerate(zip(hf_ids, tc_ids))
                if a != b and abs(hf_logit[a] - hf_logit[b]) > atol
            ]
            if bad:
                problems.append(f"top-{len(hf_ids)} order differs: transformers {hf_ids} vs tcomm {tc_ids}")
            else:
                print(f"note: top-{len(hf_ids)} order differs only between near-ties (<= {atol})")
        else:
            # a swap at the boundary of the list between near-ties is also tolerated
            missing = [i for i in hf_ids if i not in tc_ids]
            kth = hf_top[-1][1]
            if all(abs(hf_logit[i] - kth) <= atol for i in missing):
                print(f"note: top-{len(hf_ids)} set differs only at the cut-off between near-ties")
            else:
                problems.append(f"top-{len(hf_ids)} ids differ: transformers {hf_ids} vs tcomm {tc_ids}")
    if not (max_diff <= atol):
        problems.append(f"max |logit diff| {max_diff:.3g} > atol {atol:g}")
    return not problems, problems, max_diff


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--tcomm", default=None, help="tcomm binary (default target/release/tcomm, else target/debug/tcomm)")
    ap.add_argument("--tcomm-model", default=None, help="what to pass to tcomm --model (default: resolved path)")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--atol", type=float, default=2e-3)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--tcomm-device", default="cpu", help="tcomm's --device (cuda checks the GPU path; "
                    "transformers stays on the CPU in f32, the reference)")
    ap.add_argument("--transformers-only", action="store_true", help="do not look for tcomm; exit 0")
    ap.add_argument("--json", action="store_true", help="also print the transformers result as one JSON line")
    args = ap.parse_args()

    r = rc.resolve(args.model)
    tok = rc.load_tokenizer(r)
    token_ids = list(tok(args.text)["input_ids"])
    model = rc.load_model(r)
    logits = rc.last_position_logits(model, token_ids)
    hf = {"token_ids": token_ids, "top": rc.top_k(logits, args.top_k)}

    print(f"model: {r.name} ({r.path})")
    print(f"tokens ({len(token_ids)}): {token_ids}")
    if args.json:
        print(json.dumps(hf))

    binary = None if args.transformers_only else find_tcomm(args.tcomm)
    tc = None
    if binary:
        try:
            tc = run_tcomm(binary, args.tcomm_model or r.path, args.text, args.top_k, args.timeout, args.tcomm_device)
        except Exception as e:  # noqa: BLE001 -- report any failure as the verdict
            print(f"VERDICT: FAIL model={r.name} tcomm error: {e}")
            return 1

    tc_top = {int(e["id"]): float(e["logit"]) for e in (tc or {}).get("top", [])}
    tc_rank = [int(e["id"]) for e in (tc or {}).get("top", [])]
    print(f"{'rank':>4} {'hf id':>8} {'hf logit':>12}" + (f" {'tcomm id':>9} {'tcomm logit':>12} {'|diff|':>10}" if tc else ""))
    for rank, e in enumerate(hf["top"]):
        line = f"{rank:>4} {e['id']:>8} {e['logit']:>12.5f}"
        if tc:
            tid = tc_rank[rank] if rank < len(tc_rank) else None
            tl = tc_top.get(tid) if tid is not None else None
            d = abs(e["logit"] - tc_top[e["id"]]) if e["id"] in tc_top else float("nan")
            line += f" {str(tid):>9} {('%.5f' % tl) if tl is not None else '-':>12} {d:>10.2e}"
        line += f"  {tok.decode([e['id']])!r}"
        print(line)

    if tc is None:
        if args.transformers_only:
            print(f"VERDICT: SKIP model={r.name} (transformers only)")
            return 0
        where = args.tcomm or "target/release/tcomm, target/debug/tcomm"
        print(f"VERDICT: SKIP model={r.name} tcomm binary not found ({where})")
        return 1

    ok, problems, max_diff = compare(hf, tc, args.atol)
    for p in problems:
        print(f"problem: {p}")
    status = "PASS" if ok else "FAIL"
    if any(p.startswith("token ids") for p in problems):
        ids_status, top_status = "DIFFERENT", "unchecked"
    else:
        ids_status = "same"
        top_status = "DIFFERENT" if any(p.startswith("top") for p in problems) else "same"
    print(
        f"VERDICT: {status} model={r.name} tokens={len(token_ids)} token_ids={ids_status} "
        f"top{args.top_k}_ids={top_status} max_abs_logit_diff={max_diff:.3g} atol={args.atol:g}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
