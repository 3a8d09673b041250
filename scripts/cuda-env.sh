# Sourced on the GPU machine (by the bundle's `eqflow` wrapper and gpu-check.sh): makes the CUDA-built
# eqflow loadable there without shipping CUDA libraries (docs/gpu.md).
#
# The binary needs (readelf -d): libcuda.so.1 (the driver's), libnvrtc.so.13, libcublas.so.13 and
# libcublasLt.so.13 (+ libnvrtc-builtins.so.13.0 beside libnvrtc). The CUDA 13 ones are taken from
# EQFLOW_CUDA_LIBS (colon-separated directories) if set, else from PyTorch's nvidia-* packages
# (site-packages/nvidia/cu13/lib), else from a CUDA toolkit or a file-system search. It also points
# /tmp/eqflow-cuda-13.0/include -- the include path dfdx baked into the binary for the kernels it
# compiles at run time with NVRTC -- at this bundle's headers.
# Prints what it chose; returns non-zero (without exiting the caller's shell) when a library is missing.

eqflow_cuda_env() {
  local here bundle_bin sonames soname dir found candidates py_dirs fixed
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  bundle_bin=$here/bin/eqflow
  fixed=/tmp/eqflow-cuda-13.0
  sonames="libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13"

  py_dirs=$(python3 - 2>/dev/null <<'PY'
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit
for base in list(nvidia.__path__):
    for d in sorted(glob.glob(os.path.join(base, "cu13", "lib")) + sorted(glob.glob(os.path.join(base, "*", "lib")))):
        print(d)
PY
)
  candidates="${EQFLOW_CUDA_LIBS//:/ } $py_dirs /usr/local/cuda/lib64 /usr/local/cuda-13.0/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu /usr/lib64"
  local add=""
  for soname in $sonames; do
    found=""
    for dir in $candidates; do
      if [ -e "$dir/$soname" ]; then found=$dir; break; fi
    done
    if [ -z "$found" ]; then
      # last resort: search the file system (bounded in time)
      found=$(timeout 60 find / -xdev -name "$soname" -not -path '/proc/*' 2>/dev/null | head -1)
      found=${found%/*}
    fi
    if [ -z "$found" ]; then
      echo "cuda-env: $soname not found (set EQFLOW_CUDA_LIBS to its directory)" >&2
      return 1
    fi
    echo "cuda-env: $soname <- $found" >&2
    case ":$add:" in *":$found:"*) ;; *) add=${add:+$add:}$found ;; esac
  done
  export LD_LIBRARY_PATH=$add${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

  # the driver's libcuda.so.1 is normally on the loader path already; containers sometimes mount it elsewhere
  if ! ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1 '; then
    for dir in /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/wsl/lib; do
      if [ -e "$dir/libcuda.so.1" ]; then export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$dir; break; fi
    done
  fi

  # the NVRTC include path baked into the binary
  if [ ! -e "$fixed/include/cuda_fp16.h" ] && [ -d "$here/include" ]; then
    mkdir -p "$fixed" && ln -sfn "$here/include" "$fixed/include"
  fi
  echo "cuda-env: NVRTC headers at $fixed/include -> $(readlink -f "$fixed/include" 2>/dev/null || echo missing)" >&2

  if [ -x "$bundle_bin" ] && ldd "$bundle_bin" 2>/dev/null | grep -q 'not found'; then
    echo "cuda-env: unresolved libraries:" >&2
    ldd "$bundle_bin" | grep 'not found' >&2
    return 1
  fi
  return 0
}
eqflow_cuda_env
