#!/bin/bash
# Splatfacto benchmark, GPU side (nerfstudio 1.1.5 ns-train splatfacto on the lent H100/H200: offline, Python 3.12,
# torch 2.11+cu130, no nerfstudio installed). Datasets come from `benchmarks/bench_splat.py prepare .out/splat` on
# the CPU machine; wheels, prebuilt gsplat kernel and open3d shim from ../shared/recipes/splatfacto-gpu copied to
# .whl/ (docs/splat_benchmark.md). Run from the repository root with carry [".whl", ".out/splat"]:
#
#   set -o pipefail; bash benchmarks/splat_device.sh 2>&1 | tee $OUT/device.log
#
# For every run in RUNS ("scene:variant[:camera-optimizer-mode]"), PARALLEL at a time on the one GPU: ns-train
# splatfacto for STEPS steps (STEPS_<scene> overrides, e.g. STEPS_room_hard=2000) at full resolution
# (--pipeline.model.num-downscales 0), nerfstudio-data --eval-mode filename (the frame_eval_* views held out),
# then benchmarks/splat_eval.py (nerfstudio's own held-out PSNR/SSIM as ns-eval computes them, training-view PSNR,
# a held-out render) and one JSON line appended to $OUT/splat.jsonl as soon as the run is done. At the end the
# records get the gt_cameras baseline (benchmarks/splat_records.py finalize) and $OUT/splat_views.png shows a
# held-out view: truth, then each run's render. Runs not started by START_DEADLINE seconds are recorded as skipped;
# a run is stopped at DEADLINE seconds (both from the start of this script).
#
# RUNS=auto: every dataset under DATA (each scene/variant with a transforms.json; SCENES="a b" keeps those scenes),
# gt first, e.g. the oracle_noisy_x3/x6/x10 variants of `bench_splat.py prepare --levels 0.2,0.6,1.2,2`.
# A dataset whose meta.json has "splat_seed" trains with --machine.seed of that value (run-to-run spread).
# Knobs (environment): DATA (.out/splat), WHL (.whl), RUNS, SCENES, PARALLEL (4), STEPS (3000), STEPS_<scene>,
#   EXTRA (more splatfacto flags for every run), START_DEADLINE (420), DEADLINE (540), JIT=1 (compile gsplat).
#   For a dry run of the harness without a GPU: SKIP_SETUP=1 (no install), NS_TRAIN / SPLAT_EVAL (stand-in commands).
# Writes to $OUT: splat.jsonl, splat_views.png, logs.tar.gz (train/eval logs, eval JSONs, renders),
#   gsplat_build.log (and gsplat_cuda.so after a JIT build).
set -u
: "${OUT:?OUT must be set (the folder whose files come back)}"
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_HOME=/tmp/torchhome TORCH_EXTENSIONS_DIR=/tmp/torch_ext
export TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 # torch >= 2.6 torch.load in nerfstudio 1.1.5's checkpoint loading
DATA=${DATA:-.out/splat}
WHL=${WHL:-.whl}
PARALLEL=${PARALLEL:-4}
STEPS=${STEPS:-3000}
EXTRA=${EXTRA:-}
START_DEADLINE=${START_DEADLINE:-420}
DEADLINE=${DEADLINE:-540}
RUNS=${RUNS:-"room:gt room:oracle_clean room:oracle_noisy room:oracle_noisy:SO3xR3 room_hard:gt room_hard:oracle_clean room_hard:oracle_noisy room_hard:oracle_noisy:SO3xR3"}
if [ "$RUNS" = auto ]; then
  RUNS=$(python3 -c "
import pathlib, sys
root, keep = pathlib.Path(sys.argv[1]), sys.argv[2].split()
for scene in sorted(p for p in root.iterdir() if p.is_dir() and (not keep or p.name in keep)):
    names = sorted(v.name for v in scene.iterdir() if (v / 'transforms.json').is_file())
    print(' '.join(f'{scene.name}:{n}' for n in sorted(names, key=lambda n: (n != 'gt', n))), end=' ')
" "$DATA" "${SCENES:-}")
fi
NS_TRAIN=${NS_TRAIN:-ns-train}
SPLAT_EVAL=${SPLAT_EVAL:-python3 benchmarks/splat_eval.py}
WORK=${WORK:-/tmp/splat_work}
HERE=$(pwd)
T0=$(date +%s.%N)
elapsed() { python3 -c "import time; print(f'{time.time() - $T0:.1f}')"; }
say() { echo "[$(elapsed) s] $*"; }

rm -rf "$WORK/logs" "$WORK/renders" "$WORK/eval" "$WORK/outputs" # a warm machine keeps /tmp: no stale results
mkdir -p "$WORK/logs" "$WORK/renders" "$WORK/eval"
setup() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHL"/*.whl || exit 1
  cp -r "$WHL/shim/open3d" /tmp/site/ # numpy-only open3d.io.read_point_cloud (the harness only, never the product)
  export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
  say "installed the wheels"
  mkdir -p "$TORCH_HOME/hub/checkpoints" # placeholder AlexNet: LPIPS constructs offline (its values are meaningless)
  python3 -c "import torch,torchvision;torch.save(torchvision.models.alexnet().state_dict(),'$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth')" &
  ALEX=$!
  if [ -f "$WHL/prebuilt/gsplat_cuda.so" ] && [ "${JIT:-0}" != 1 ]; then
    cp "$WHL/prebuilt/gsplat_cuda.so" /tmp/site/gsplat/gsplat_cuda.so && cp "$WHL/gsplat_csrc.py" /tmp/site/gsplat/csrc.py
    say "gsplat: prebuilt $WHL/prebuilt/gsplat_cuda.so"
  fi
  python3 -c "from gsplat.cuda._backend import _C; assert _C is not None, 'gsplat JIT failed'; print('gsplat _C', _C.__file__)" >"$OUT/gsplat_build.log" 2>&1 || {
    tail -c 3000 "$OUT/gsplat_build.log"
    exit 2
  }
  [ -f "$TORCH_EXTENSIONS_DIR/gsplat_cuda/gsplat_cuda.so" ] && cp "$TORCH_EXTENSIONS_DIR/gsplat_cuda/gsplat_cuda.so" "$OUT/"
  wait $ALEX
}
[ "${SKIP_SETUP:-0}" = 1 ] || setup
DEVICE=$(python3 -c "import torch; print(torch.cuda.get_device_name())" 2>/dev/null || echo unknown)
say "gsplat ready; device: $DEVICE; runs: $RUNS; parallel $PARALLEL; steps $STEPS"

record() { # scene variant run camopt steps train_s eval_s error
  python3 benchmarks/splat_records.py record "$OUT/splat.jsonl" --eval "$WORK/eval/$1__$3.json" \
    --meta "$DATA/$1/$2/meta.json" --scene "$1" --variant "$2" --run "$3" --steps "$5" --camera-opt "$4" \
    ${6:+--train-seconds "$6"} ${7:+--eval-seconds "$7"} --device "$DEVICE" --extra "$EXTRA" --parallel "$PARALLEL" \
    --error "$8" >/dev/null
}

run_one() { # "scene:variant[:camopt]"
  local scene variant camopt run steps_var steps data name now left t1 t2 t3 rc err=""
  IFS=: read -r scene variant camopt <<<"$1"
  camopt=${camopt:-off}
  run=$variant$([ "$camopt" != off ] && echo _camopt)
  steps_var=STEPS_$scene
  steps=${!steps_var:-$STEPS}
  data=$DATA/$scene/$variant
  name=${scene}__$run
  if [ ! -f "$data/transforms.json" ]; then
    say "$name: no dataset at $data"
    record "$scene" "$variant" "$run" "$camopt" "$steps" "" "" "no dataset at $data"
    return
  fi
  if [ ! -f "$data/images/$(ls "$DATA/$scene/gt/images" | head -1)" ]; then # the images link did not travel
    rm -rf "$data/images" && cp -r "$DATA/$scene/gt/images" "$data/images" && say "$name: copied gt/images"
  fi
  now=$(elapsed)
  left=$(python3 -c "print(max(30, int($DEADLINE - $now - 45)))")
  t1=$(date +%s.%N)
  say "$name: training $steps steps (camera optimizer $camopt, at most $left s)"
  local camflag="" seedflag
  seedflag=$(python3 -c "import json; s = json.load(open('$data/meta.json')).get('splat_seed'); print(f'--machine.seed {s}' if s is not None else '')")
  [ "$camopt" != off ] && camflag="--pipeline.model.camera-optimizer.mode $camopt"
  # shellcheck disable=SC2086  # EXTRA and camflag are lists of flags
  timeout "$left" $NS_TRAIN splatfacto --data "$data" --max-num-iterations "$steps" \
    --steps-per-eval-all-images 0 --steps-per-eval-image 0 --pipeline.model.num-downscales 0 $camflag $seedflag $EXTRA \
    --viewer.quit-on-train-completion True --vis tensorboard --output-dir "$WORK/outputs" \
    --experiment-name "$name" --timestamp run \
    nerfstudio-data --eval-mode filename >"$WORK/logs/$name.train.log" 2>&1
  rc=$?
  t2=$(date +%s.%N)
  local train_s
  train_s=$(python3 -c "print(f'{$t2 - $t1:.1f}')")
  local config=$WORK/outputs/$name/splatfacto/run/config.yml
  if [ $rc != 0 ] || ! ls "$WORK/outputs/$name/splatfacto/run/nerfstudio_models/"*.ckpt >/dev/null 2>&1; then
    err="ns-train rc=$rc: $(sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$WORK/logs/$name.train.log" | grep -v '^\s*$' | tail -3 | tr '\n' ' ' | cut -c1-400)"
    say "$name: FAILED after $train_s s: $err"
    record "$scene" "$variant" "$run" "$camopt" "$steps" "$train_s" "" "$err"
    return
  fi
  say "$name: trained in $train_s s; $(sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$WORK/logs/$name.train.log" | grep -E '^[0-9]+ \(' | tail -1)"
  now=$(elapsed)
  left=$(python3 -c "print(min(150, max(30, int($DEADLINE + 30 - $now))))")
  # shellcheck disable=SC2086  # SPLAT_EVAL is a command line
  timeout "$left" $SPLAT_EVAL "$config" "$WORK/eval/$name.json" \
    --render "$WORK/renders/$name.png" --view "$(python3 -c "import json; print(json.load(open('$data/meta.json')).get('render_view', 0))")" >"$WORK/logs/$name.eval.log" 2>&1
  rc=$?
  t3=$(date +%s.%N)
  [ $rc != 0 ] && err="eval rc=$rc: $(grep -v '^\s*$' "$WORK/logs/$name.eval.log" | tail -3 | tr '\n' ' ' | cut -c1-400)"
  record "$scene" "$variant" "$run" "$camopt" "$steps" "$train_s" "$(python3 -c "print(f'{$t3 - $t2:.1f}')")" "$err"
  say "$name: $(python3 -c "
import json, sys
r = [json.loads(l) for l in open('$OUT/splat.jsonl') if l.strip()][-100:]
r = [x for x in r if x['scene'] == '$scene' and x['run'] == '$run'][-1]
print('psnr', r.get('psnr'), 'ssim', r.get('ssim'), 'train_psnr', r.get('train_psnr'), 'gaussians', r.get('num_gaussians'), r.get('error', ''))")"
}

touch "$OUT/splat.jsonl"
for spec in $RUNS; do
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do wait -n; done
  if python3 -c "import sys; sys.exit(0 if $(elapsed) > $START_DEADLINE else 1)"; then
    IFS=: read -r s v c <<<"$spec"
    say "$spec: skipped (START_DEADLINE $START_DEADLINE s passed)"
    c=${c:-off}
    r=$v$([ "$c" != off ] && echo _camopt)
    record "$s" "$v" "$r" "$c" "$(v=STEPS_$s; echo "${!v:-$STEPS}")" "" "" "skipped: START_DEADLINE passed"
    continue
  fi
  run_one "$spec" &
  sleep 2 # stagger the start-up (imports, dataset loading)
done
wait

python3 benchmarks/splat_records.py finalize "$OUT/splat.jsonl" "$WORK/splat.final.jsonl" && cp "$WORK/splat.final.jsonl" "$OUT/splat.jsonl"
python3 benchmarks/splat_records.py picture "$OUT/splat_views.png" "$WORK/renders" || say "no picture"
tar czf "$OUT/logs.tar.gz" -C "$WORK" logs eval renders
say "done"
cd "$HERE" || exit 0
