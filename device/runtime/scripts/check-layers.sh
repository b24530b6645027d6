#!/bin/sh
# check-layers.sh SRC — fails when a file under SRC (device/runtime/src) includes a header of
# a layer above its own, or across to a sibling it must not see. The order, top to bottom
# (device/README.md):
#
#   api/ platform/  ->  train/  ->  format/  ->  plan/  ->  ops/  ->  reference/  ->  compute/  ->  base/
#     ->  micro-kernels: ukernels.h, f32-gemm/ f32-dwconv/ qs8-gemm/ qs8-dwconv/ qs8-vadd/
#         f32-qs8-vcvt/ (and qs8-requant/, the SIMD requantization they share)
#
# A file may include its own folder, the public header (tether/tether.h) and any layer below
# its own. Two rules are stricter: plan/ includes nothing of the engine (it plans sizes and
# lifetimes, knowing no model), and a micro-kernel file includes only ukernels.h, its own
# folder and qs8-requant/. Prints every offending line; exit status 1 if there is one.
set -u
src=${1:?usage: check-layers.sh SRC}

rank() {  # rank of a folder (0 = top); empty for an unknown folder
  case $1 in
    api|platform) echo 0 ;;
    train) echo 1 ;;
    format) echo 2 ;;
    plan) echo 3 ;;
    ops) echo 4 ;;
    reference) echo 5 ;;
    compute) echo 6 ;;
    base) echo 7 ;;
    .|f32-gemm|f32-dwconv|qs8-gemm|qs8-dwconv|qs8-vadd|f32-qs8-vcvt|qs8-requant) echo 8 ;;
    *) echo "" ;;
  esac
}

bad=0
files=$(cd "$src" && find . -name '*.c' -o -name '*.h' | sed 's|^\./||' | sort)
for file in $files; do
  case $file in */*) dir=${file%%/*} ;; *) dir=. ;; esac
  from=$(rank "$dir")
  if [ -z "$from" ]; then
    echo "$src/$file: folder $dir/ has no place in the layer order (add it to check-layers.sh and device/README.md)"
    bad=1
    continue
  fi
  includes=$(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$src/$file")
  for inc in $includes; do
    case $inc in tether/*) continue ;; esac
    # Resolve against the file's folder ("../x.h", "x.h") or the source root ("ops/ops.h").
    case $inc in
      ../*) target=${inc#../} ;;
      */*) target=$inc ;;
      *) if [ "$dir" = . ]; then target=$inc; else target=$dir/$inc; fi ;;
    esac
    case $target in */*) to_dir=${target%%/*} ;; *) to_dir=. ;; esac
    [ "$to_dir" = "$dir" ] && continue
    to=$(rank "$to_dir")
    why=""
    if [ -z "$to" ]; then
      why="unknown folder $to_dir/"
    elif [ "$dir" = plan ]; then
      why="plan/ includes nothing of the engine"
    elif [ "$from" = 8 ]; then
      case $to_dir in .|qs8-requant) ;; *) why="a micro-kernel includes only ukernels.h, its folder and qs8-requant/" ;; esac
    elif [ "$to" -lt "$from" ]; then
      why="points up ($dir/ is below $to_dir/)"
    elif [ "$to" -eq "$from" ]; then
      why="points across ($dir/ and $to_dir/ are one layer)"
    fi
    if [ -n "$why" ]; then
      echo "$src/$file: #include \"$inc\": $why"
      bad=1
    fi
  done
done
if [ "$bad" = 0 ]; then
  echo "layers: every #include under $src points down the order"
fi
exit "$bad"
