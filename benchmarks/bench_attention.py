"""Decoder-sized attention ([1, 16, N, 64] bf16, the model's strided qkv layout): cuDNN (as the model runs it,
KV-blocked for long N) against our Triton kernel (``fast3r_ns.model.triton_attention``) in several configurations,
time and error against float32.

Usage (GPU): python benchmarks/bench_attention.py --tokens 49152 768000 --sweep 49152
Writes JSON lines to benchmarks/results/attention_<gpu>.jsonl (fields: shared/conventions/RESULTS.md). The error is
||out - exact|| / ||exact|| over a sample of queries, exact = float32 attention of the same bf16 inputs; "q_gain"
multiplies the queries (1: near-uniform softmax of random data, 4: peaked).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, append, commit, device_name, device_slug, sync  # noqa: E402
from fast3r_ns.model import attention as attention_module  # noqa: E402
from fast3r_ns.model import triton_attention as triton_module  # noqa: E402

HEADS, HEAD_DIM = 16, 64
SCALE = HEAD_DIM**-0.5

BASE = {"BLOCK_M": 128, "SUB_N": 64, "PARTS": 2, "POLY_PARTS": 0, "num_warps": 8, "num_stages": 2}
SWEEP = [
    BASE | {"num_stages": 3, "PARTS": 1},
    BASE | {"num_stages": 3, "PARTS": 1, "HALF_EXP": 1},
    BASE | {"TMA": True},
    BASE | {"TMA": True, "HALF_EXP": 1},
    BASE | {"TMA": True, "HALF_EXP": 1, "num_stages": 3},
    BASE | {"TMA": True, "HALF_EXP": 1, "PARTS": 1, "num_stages": 3},
    BASE | {"TMA": True, "HALF_EXP": 1, "WARP_SPECIALIZE": True},
    BASE | {"TMA": True, "HALF_EXP": 1, "FP16": True},
    BASE | {"TMA": True, "PARTS": 1, "num_stages": 3},
    BASE | {"TMA": True, "HALF_EXP": 1, "SUB_N": 128, "PARTS": 1, "num_stages": 3},
    BASE | {"TMA": True, "HALF_EXP": 1, "num_warps": 4, "num_stages": 3},
]
"""Triton configurations tried by --sweep (see ``triton_attention.DEFAULT_CONFIG`` for the keys)."""


def strided_qkv(tokens: int, q_gain: float, seed: int) -> list[torch.Tensor]:
    """q, k, v [1, H, N, D] bf16 as the model makes them: views of one [1, N, 3, H, D] tensor."""
    generator = torch.Generator(device="cuda").manual_seed(seed)
    qkv = torch.randn(1, tokens, 3, HEADS, HEAD_DIM, device="cuda", generator=generator, dtype=torch.bfloat16)
    qkv[:, :, 0] *= q_gain
    return list(qkv.permute(2, 0, 3, 1, 4))


def relative_error(out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, samples: int) -> float:
    """||out - exact|| / ||exact|| over ``samples`` evenly spaced queries (exact: float32 attention)."""
    rows = torch.linspace(0, q.shape[2] - 1, samples, device=q.device).long()
    k32, v32 = k.float(), v.float()
    parts = [
        torch.nn.functional.scaled_dot_product_attention(q[:, :, part].float(), k32, v32, scale=SCALE)
        for part in rows.split(256)
    ]
    exact = torch.cat(parts, dim=2)
    return ((out[:, :, rows].float() - exact).norm() / exact.norm()).item()


def triton_variant(config: dict, kv_block: int = 0):
    def run(q, k, v):
        if kv_block and k.shape[2] > 2 * kv_block:
            attend = lambda *a: triton_module.triton_attention(*a, with_lse=True, config=config)  # noqa: E731
            return attention_module.blocked_attention(q, k, v, SCALE, kv_block, attention_module.Q_BLOCK_TOKENS, attend)
        return triton_module.triton_attention(q, k, v, SCALE, config=config)[0]

    return run


def cudnn(q, k, v):
    return attention_module.attention(q, k, v, SCALE)


def measure(run, q, k, v, repeats: int) -> tuple[float, torch.Tensor]:
    result = run(q, k, v)  # warm-up (and compilation)
    start = sync("cuda")
    for _ in range(repeats):
        result = run(q, k, v)
    return (sync("cuda") - start) / repeats, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[49152, 768000])
    parser.add_argument("--sweep", type=int, default=None, help="tokens: time every SWEEP config there first")
    parser.add_argument("--configs", type=str, default=None, help="JSON list of Triton configs (default: best 2)")
    parser.add_argument("--q-gains", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--samples", type=int, default=1024, help="queries checked against float32")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or RESULTS / f"attention_{device_slug()}.jsonl"
    base = {"bench": "attention", "commit": commit(), "device": device_name(), "gpus": 1, "torch": torch.__version__}
    base |= {"heads": HEADS, "head_dim": HEAD_DIM, "dtype": "bf16"}

    def record(case: str, tokens: int, q_gain: float, seconds: float, error: float, extra: dict) -> dict:
        flop = 4 * tokens**2 * HEADS * HEAD_DIM
        row = base | {"case": case, "tokens": tokens, "q_gain": q_gain, "seconds": seconds}
        row |= {"tflops_per_s": flop / seconds / 1e12, "rel_error_vs_fp32": error} | extra
        append(out, row)
        print(f"{tokens:>7} gain {q_gain:g} {case:<14} {row['tflops_per_s']:6.1f} TFLOP/s err {error:.5f} {extra}")
        return row

    configs = json.loads(args.configs) if args.configs else SWEEP[:2]
    if args.sweep:
        q, k, v = strided_qkv(args.sweep, 1.0, seed=1)
        seconds, result = measure(cudnn, q, k, v, 5)
        record("cudnn", args.sweep, 1.0, seconds, relative_error(result, q, k, v, args.samples), {})
        rates = []
        for config in SWEEP:
            try:
                seconds, result = measure(triton_variant(config), q, k, v, 5)
            except Exception as error:  # noqa: BLE001 - a config that does not compile is recorded and skipped
                print(f"config {config} failed: {str(error).splitlines()[0][:200]}")
                continue
            row = record("triton", args.sweep, 1.0, seconds, relative_error(result, q, k, v, args.samples), config)
            rates.append((row["tflops_per_s"], config))
        configs = [c for _, c in sorted(rates, key=lambda r: -r[0])[:2]]
        del q, k, v
    for tokens in args.tokens:
        repeats = 3 if tokens <= 200_000 else 1
        for q_gain in args.q_gains:
            q, k, v = strided_qkv(tokens, q_gain, seed=tokens)
            seconds, result = measure(cudnn, q, k, v, repeats)
            blocked = attention_module.KV_BLOCK_TOKENS if tokens > 2 * attention_module.KV_BLOCK_TOKENS else 0
            error = relative_error(result, q, k, v, args.samples)
            record("cudnn", tokens, q_gain, seconds, error, {"kv_block": blocked})
            for config in configs:
                for kv_block in sorted({0, blocked}):
                    seconds, result = measure(triton_variant(config, kv_block), q, k, v, repeats)
                    error = relative_error(result, q, k, v, args.samples)
                    record("triton", tokens, q_gain, seconds, error, config | {"kv_block": kv_block})
            del q, k, v, result
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
