#!/usr/bin/env bash
# PyTorch peer (issue 5): Debian's python3-torch with OpenBLAS' OpenMP build. Arguments go to bench.py;
# with --w4 first, to w4.py (issue 14: fine-tuning MiniLM on CLINC150).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

blas_dir=/usr/lib/x86_64-linux-gnu/openblas-openmp
if [[ ! -e "$blas_dir/libopenblas.so.0" ]]; then
  echo "run.sh: $blas_dir/libopenblas.so.0 not found (apt-get install libopenblas0-openmp)" >&2
  exit 1
fi
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "run.sh: /usr/bin/python3 cannot import torch (apt-get install python3-torch)" >&2
  exit 1
fi

# torch links libblas.so.3 / libopenblas.so.0 by soname; this folder wins over the alternatives symlinks.
export LD_LIBRARY_PATH="$blas_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# OpenBLAS 0.3.21's runtime detection may pick Haswell kernels on AVX-512 CPUs it does not know (or under
# virtualisation); force the AVX-512 kernels where the CPU has them.
if grep -qw avx512f /proc/cpuinfo; then
  export OPENBLAS_CORETYPE=SkylakeX
fi
# 2 intra-op threads: torch.set_num_threads(2) in bench.py also sets the OpenMP team OpenBLAS uses.
export OMP_NUM_THREADS=2

script=bench.py
if [[ "${1:-}" == "--w4" ]]; then
  script=w4.py; shift
  # w4.py reads the initial weights from the ONNX model's initializers.
  if ! /usr/bin/python3 -c 'import onnx' 2>/dev/null; then
    echo "run.sh: /usr/bin/python3 cannot import onnx, which W4 needs (apt-get install python3-onnx)" >&2
    exit 1
  fi
fi
exec /usr/bin/python3 "$here/$script" "$@"
