"""Decoder-sized attention ([1, 16, N, 64], the model's strided qkv layout): bf16 (cuDNN, KV-blocked as the model
runs it) against FP8 (cuDNN fused FP8 SDPA, unblocked and KV-blocked), time and error against float32.

Usage (GPU): python benchmarks/bench_attention.py --tokens 49152 196608 768000
Writes JSON lines to benchmarks/results/attention_<gpu>.jsonl (fields: shared/conventions/RESULTS.md). The error is
||out - exact|| / ||exact|| over a sample of queries, exact = float32 attention of the same bf16 inputs; "q_gain"
multiplies the queries (1: near-uniform softmax of random data, 4: peaked).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, append, commit, device_name, device_slug, sync  # noqa: E402
from fast3r_ns.model import attention as attention_module  # noqa: E402

HEADS, HEAD_DIM = 16, 64
SCALE = HEAD_DIM**-0.5


def strided_qkv(tokens: int, q_gain: float, seed: int) -> list[torch.Tensor]:
    """q, k, v [1, H, N, D] bf16 as the model makes them: views of one [1, N, 3, H, D] tensor."""
    generator = torch.Generator(device="cuda").manual_seed(seed)
    qkv = torch.randn(1, tokens, 3, HEADS, HEAD_DIM, device="cuda", generator=generator, dtype=torch.bfloat16)
    qkv[:, :, 0] *= q_gain
    return list(qkv.permute(2, 0, 3, 1, 4))


def relative_error(out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, samples: int) -> float:
    """||out - exact|| / ||exact|| over ``samples`` evenly spaced queries (exact: float32 math)."""
    rows = torch.linspace(0, q.shape[2] - 1, samples, device=q.device).long()
    exact = torch.cat(
        [
            torch.nn.functional.scaled_dot_product_attention(q[:, :, part].float(), k.float(), v.float(), scale=SCALE)
            for part in rows.split(256)
        ],
        dim=2,
    )
    return ((out[:, :, rows].float() - exact).norm() / exact.norm()).item()


def variants(tokens: int) -> dict:
    """name -> callable(q, k, v) for the attentions compared at this length."""
    blocked = attention_module.KV_BLOCK_TOKENS

    def bf16(q, k, v):
        return attention_module.attention(q, k, v, SCALE)

    def fp8(block):
        def run(q, k, v):
            saved = attention_module.FP8_KV_BLOCK_TOKENS
            attention_module.FP8_KV_BLOCK_TOKENS = block
            try:
                return attention_module.attention(q, k, v, SCALE, fp8=True)
            finally:
                attention_module.FP8_KV_BLOCK_TOKENS = saved

        return run

    cases = {"bf16-cudnn": bf16, "fp8-cudnn": fp8(0)}
    if tokens > 2 * blocked:
        cases["fp8-cudnn-blocked"] = fp8(blocked)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[49152, 196608])
    parser.add_argument("--q-gains", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--samples", type=int, default=1024, help="queries checked against float32")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or RESULTS / f"attention_{device_slug()}.jsonl"
    base = {"bench": "attention", "commit": commit(), "device": device_name(), "gpus": 1, "torch": torch.__version__}
    for tokens in args.tokens:
        flop = 4 * tokens**2 * HEADS * HEAD_DIM
        repeats = 3 if tokens <= 200_000 else 1
        for q_gain in args.q_gains:
            q, k, v = strided_qkv(tokens, q_gain, seed=tokens)
            for name, run in variants(tokens).items():
                record = base | {"case": name, "tokens": tokens, "heads": HEADS, "head_dim": HEAD_DIM, "q_gain": q_gain}
                result = run(q, k, v)  # warm-up (and graph build)
                start = sync("cuda")
                for _ in range(repeats):
                    result = run(q, k, v)
                seconds = (sync("cuda") - start) / repeats
                record |= {"seconds": seconds, "tflops_per_s": flop / seconds / 1e12}
                record["rel_error_vs_fp32"] = relative_error(result, q, k, v, args.samples)
                append(out, record)
                print(
                    f"{tokens:>7} gain {q_gain:g} {name:<18} {record['tflops_per_s']:6.1f} TFLOP/s "
                    f"err {record['rel_error_vs_fp32']:.4f}",
                    flush=True,
                )
                del result
            del q, k, v
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
