"""Forward time, peak memory and per-stage split of our Fast3R at the released size (random weights).

Usage (GPU): python benchmarks/bench_model.py --views 8 64 256 --dtypes bf16 --compare 8 64
Writes JSON lines to benchmarks/results/model_<gpu>.jsonl (fields: shared/conventions/RESULTS.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, append, commit, device_name, device_slug, randomize_weights, sync  # noqa: E402
from fast3r_ns.model import AttentionOptions, Fast3R, Fast3RConfig  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(dtype: torch.dtype, device: str, seed: int = 0, attention: AttentionOptions | None = None) -> Fast3R:
    with torch.device(device):
        model = Fast3R(Fast3RConfig(), attention=attention)
    randomize_weights(model, seed)
    return model.to(dtype).eval()


def images(
    views: int, height: int, width: int, device: str, seed: int = 0, dtype: torch.dtype = torch.bfloat16
) -> list[torch.Tensor]:
    """Smooth random images in [-1, 1] (low-frequency noise upsampled), one [1, 3, H, W] per view, in ``dtype``
    (the predictor casts to the model's dtype before the transfer)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    coarse = torch.rand(views, 3, height // 32, width // 32, generator=generator) * 2 - 1
    full = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return [v[None].to(device, dtype) for v in full]


@torch.inference_mode()
def timed_forward(model: Fast3R, views: list[torch.Tensor], device: str, output_device: str | None = None) -> dict:
    """One forward through Fast3R.forward's public stages, synchronised between stages."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = sync(device)
    cast = model.prepare(views)
    ids = model.view_ids(len(cast), cast[0].shape[0])
    features = model.encode(cast)
    t1 = sync(device)
    hooked = model.decode(features, ids)
    del features
    t2 = sync(device)
    outputs = model.heads(cast, hooked, output_device)
    del hooked
    t3 = sync(device)
    tokens = sum(v.shape[-2] * v.shape[-1] // 256 for v in views)
    cfg = model.config.decoder
    attention_flop = 4 * tokens**2 * cfg.embed_dim * cfg.depth
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return {
        "seconds": t3 - t0,
        "encoder_seconds": t1 - t0,
        "decoder_seconds": t2 - t1,
        "heads_seconds": t3 - t2,
        "peak_gib": peak,
        "decoder_attention_tflops_per_s": attention_flop / (t2 - t1) / 1e12,
        "outputs": outputs,
    }


def compare(reference: list[dict], other: list[dict]) -> dict:
    """Relative differences of global/local points (|a-b| / |ref|, per pixel) and confidences."""
    stats = {}
    for key in ("pts3d_in_other_view", "pts3d_local", "conf", "conf_local"):
        ref = torch.cat([o[key].float().flatten() for o in reference]).cpu()
        new = torch.cat([o[key].float().flatten() for o in other]).cpu()
        if key.startswith("pts3d"):
            ref, new = ref.view(-1, 3), new.view(-1, 3)
            rel = (new - ref).norm(dim=-1) / ref.norm(dim=-1).clamp(min=1e-6)
        else:
            rel = (new - ref).abs() / ref.abs()
        stats[f"{key}_rel_median"] = rel.median().item()
        stats[f"{key}_rel_p99"] = rel.kthvalue(int(0.99 * rel.numel())).values.item()
    return stats


def sdpa_backends(tokens: int, device: str, layouts: bool = False) -> Iterator[dict]:
    """Achieved TFLOP/s of SDPA on one decoder-sized attention ([1, 16, tokens, 64]).

    Every backend in bf16 on contiguous [B, H, N, D] tensors; with ``layouts``, cuDNN also on the strided views the
    model passes (a [B, N, 3, H, D] qkv tensor permuted) and in fp16.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def measure(backend, q, k, v, repeats):
        with sdpa_kernel(backend):
            torch.nn.functional.scaled_dot_product_attention(q, k, v)
            start = sync(device)
            for _ in range(repeats):
                torch.nn.functional.scaled_dot_product_attention(q, k, v)
            return (sync(device) - start) / repeats

    repeats = 3 if tokens <= 200_000 else 1
    flop = 4 * tokens**2 * 1024
    cases = []
    contiguous = [torch.randn(1, 16, tokens, 64, device=device, dtype=torch.bfloat16) for _ in range(3)]
    backends = (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION)
    cases += [(b.name, "bf16", "BHND", b, contiguous) for b in backends]
    if layouts:
        qkv = torch.randn(1, tokens, 3, 16, 64, device=device, dtype=torch.bfloat16).permute(2, 0, 3, 1, 4)
        cases.append(("CUDNN_ATTENTION", "bf16", "qkv-strided", SDPBackend.CUDNN_ATTENTION, list(qkv)))
        cases.append(("CUDNN_ATTENTION", "fp16", "BHND", SDPBackend.CUDNN_ATTENTION, [t.half() for t in contiguous]))
    if layouts and device.startswith("cuda"):
        from fast3r_ns.model.attention import blocked_attention

        q, k, v = contiguous
        for kv_block in (24576, 49152, 98304):
            blocked_attention(q, k, v, 0.125, kv_block, 196608)
            start = sync(device)
            for _ in range(repeats):
                blocked_attention(q, k, v, 0.125, kv_block, 196608)
            seconds = (sync(device) - start) / repeats
            yield {
                "backend": "blocked-cudnn",
                "tokens": tokens,
                "dtype": "bf16",
                "kv_block": kv_block,
                "tflops_per_s": flop / seconds / 1e12,
            }
    for name, dtype, layout, backend, (q, k, v) in cases:
        record = {"backend": name, "tokens": tokens, "dtype": dtype, "layout": layout}
        try:
            record["tflops_per_s"] = flop / measure(backend, q, k, v, repeats) / 1e12
        except RuntimeError as error:
            record["error"] = str(error).splitlines()[0]
        yield record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, nargs="*", default=[8, 64, 256])
    parser.add_argument("--dtypes", nargs="+", default=["bf16"], choices=list(DTYPES))
    parser.add_argument("--compare", type=int, nargs="*", default=[8, 64], help="views for bf16-vs-fp32 checks")
    parser.add_argument("--official", type=Path, default=None, help="official checkout: time it as the baseline")
    parser.add_argument("--official-max-views", type=int, default=1000, help="the official code fails beyond 1000")
    parser.add_argument("--sdpa", type=int, nargs="*", default=[], help="views: time SDPA backends at that size")
    parser.add_argument("--output-device", default=None, help="move outputs there per head chunk (e.g. cpu)")
    parser.add_argument("--sync-output-copies", action="store_true", help="blocking output copies (the old way)")
    parser.add_argument("--kv-block", type=int, default=None, help="attention KV block tokens (0: plain SDPA)")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    attention = AttentionOptions() if args.kv_block is None else AttentionOptions(kv_block_tokens=args.kv_block)
    torch.backends.cuda.matmul.allow_tf32 = False  # "fp32" means fp32
    torch.backends.cudnn.allow_tf32 = False
    out = args.out or RESULTS / f"model_{device_slug()}.jsonl"
    base = {"bench": "model", "commit": commit(), "device": device_name(), "gpus": 1}
    base |= {"height": args.height, "width": args.width, "torch": torch.__version__}
    base |= {"kv_block": attention.kv_block_tokens, "attention": attention.as_record()}
    base |= {"output_device": args.output_device}
    if args.output_device:
        base |= {"output_copies": "sync" if args.sync_output_copies else "overlapped"}

    def build_model(dtype: torch.dtype) -> Fast3R:
        model = build(dtype, args.device, attention=attention)
        model.overlap_output_copies = not args.sync_output_copies
        return model

    for views in args.sdpa:
        for record in sdpa_backends(views * args.height * args.width // 256, args.device, layouts=True):
            append(out, base | {"case": "sdpa_backend", "views": views} | record)
    if not args.views and not args.compare:
        return
    models = {name: build_model(DTYPES[name]) for name in args.dtypes}
    if args.compare:
        fp32 = models.get("fp32") or build_model(torch.float32)
        for views in args.compare:
            inputs = images(views, args.height, args.width, args.device)
            reference = timed_forward(fp32, inputs, args.device, args.output_device)
            append(
                out,
                base
                | {"views": views, "dtype": "fp32", "case": "precision_reference"}
                | {k: v for k, v in reference.items() if k != "outputs"},
            )
            for name in (n for n in args.dtypes if n != "fp32"):
                other = timed_forward(models[name], inputs, args.device, args.output_device)
                append(
                    out,
                    base
                    | {"views": views, "dtype": name, "baseline": "fp32", "case": "precision"}
                    | compare(reference["outputs"], other["outputs"]),
                )
        del fp32, reference, other
    official = None
    if args.official:
        from benchmarks.official_baseline import build_official

        state = {k: v.float() for k, v in models[args.dtypes[0]].state_dict().items()}
        official = build_official(args.official, models[args.dtypes[0]].config.to_dict(), state, "cpu")
        del state
    warm = images(2, args.height, args.width, args.device)
    timed_forward(models[args.dtypes[0]], warm, args.device, args.output_device)  # warm-up
    for views in args.views:
        inputs = images(views, args.height, args.width, args.device)
        baseline = {}
        if official is not None and views <= args.official_max_views:
            baseline = time_official(official, inputs, args.device)
            append(out, base | {"views": views, "dtype": "fp16-autocast", "case": "official"} | baseline)
        for name in args.dtypes:
            record = base | {"views": views, "dtype": name}
            try:
                result = timed_forward(models[name], inputs, args.device, args.output_device)
                result.pop("outputs")
                if "seconds" in baseline:
                    result |= {
                        "baseline": "official",
                        "baseline_seconds": baseline["seconds"],
                        "baseline_peak_gib": baseline["peak_gib"],
                        "ratio_to_baseline": result["seconds"] / baseline["seconds"],
                    }
                append(out, record | result)
            except torch.OutOfMemoryError as error:
                append(out, record | {"error": f"out of memory: {str(error).splitlines()[0]}"})
        del inputs


def time_official(model, inputs: list[torch.Tensor], device: str) -> dict:
    """Wall time and peak memory of the official forward (fp16 autocast), or the error it raised."""
    from benchmarks.official_baseline import official_forward

    cuda = device.startswith("cuda")
    model.to(device)  # only while it runs: its weights must not count in our peak memory
    inputs = [v.float() for v in inputs]  # the official code takes float32 images
    official_forward(model, inputs[:2], torch.float16 if cuda else None)  # warm-up
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        start = sync(device)
        outputs = official_forward(model, inputs, torch.float16 if cuda else None)
        seconds = sync(device) - start
        del outputs
        return {"seconds": seconds, "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")}
    except torch.OutOfMemoryError as error:
        return {"error": f"out of memory: {str(error).splitlines()[0]}"}
    finally:
        model.to("cpu")
        del inputs
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
