r"""Build the GGUF files ``bench_llama_cpp.py`` runs: plughost's random Qwen2.5-0.5B-shaped chat model.

The weights are the fp16 demo model ``TINY_FP16.with_shape(QWEN2_5_0_5B_SHAPE)``: the very model
``bench_chat.py`` serves as AWQ int4 (``TINY_AWQ`` at that shape is its quantisation, same seed).
llama.cpp's converter does not know the demo tokenizer, so the folder gets the real Qwen2
vocabulary instead (the tokenizer folder ``real_qwen_vocab.py`` makes; 151,936 ids, the model's
embedding rows). llama.cpp's own ``convert_hf_to_gguf.py`` writes an f16 GGUF, and
``llama_model_quantize`` turns it into Q4_0 with llama.cpp's default recipe for that type (the
tied embedding/output matrix gets Q6_K, which 896 columns do not fit, so Q8_0). Both run in a
separate llama.cpp venv (not a project dependency; the converter imports torch and transformers)::

    python3 -m venv /work/llamacpp-venv
    /work/llamacpp-venv/bin/pip install gguf numpy sentencepiece safetensors torch==2.13.0 \
        transformers==4.56.2 llama_cpp_python-0.3.36.tar.gz      # the sdist: compiles llama.cpp
    tar xzf llama_cpp_python-0.3.36.tar.gz -C /tmp
    pip install --no-deps --target /tmp/gguf-lib gguf             # for real_qwen_vocab.py only
    PYTHONPATH=/tmp/gguf-lib .venv/bin/python bench/real_qwen_vocab.py \
        /tmp/llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf /tmp/qwen-vocab

Then, with the project's venv::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/make_llama_gguf.py --tokenizer /tmp/qwen-vocab \
        --llama-cpp /tmp/llama_cpp_python-0.3.36/vendor/llama.cpp \
        --python /work/llamacpp-venv/bin/python --out /work/llamacpp-models

It writes ``qwen2.5-0.5b-random-hf/`` (weights linked from the demo cache),
``qwen2.5-0.5b-random-f16.gguf`` and ``qwen2.5-0.5b-random-q4_0.gguf`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "qwen2.5-0.5b-random"

#: Run in the llama.cpp venv: quantise argv[1] (f16 GGUF) to argv[2] (Q4_0), one thread.
QUANTIZE = """
import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
params.nthread = 1
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


def hf_folder(tokenizer: Path, dest: Path) -> Path:
    """The fp16 demo model's weights with ``tokenizer``'s files, its ids in the configs, at ``dest``."""
    from transformers import AutoTokenizer

    from chat_qwen_awq.demo import TINY_FP16
    from host.demo.shapes import QWEN2_5_0_5B_SHAPE

    source = TINY_FP16.with_shape(QWEN2_5_0_5B_SHAPE).folder()
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    (dest / "model.safetensors").symlink_to(source / "model.safetensors")
    for f in tokenizer.iterdir():
        shutil.copy(f, dest / f.name)
    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    endoftext, im_end = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    # The demo tokenizer's ids are in the configs; use the real ones, as Qwen2.5-Instruct does.
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    assert config["vocab_size"] >= len(tok), "the tokenizer does not fit the embedding"
    config.update(bos_token_id=endoftext, eos_token_id=im_end)
    (dest / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    generation = json.loads((source / "generation_config.json").read_text(encoding="utf-8"))
    generation.update(bos_token_id=endoftext, pad_token_id=endoftext, eos_token_id=[im_end, endoftext])
    (dest / "generation_config.json").write_text(json.dumps(generation, indent=2), encoding="utf-8")
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True, help="folder made by real_qwen_vocab.py")
    parser.add_argument("--llama-cpp", type=Path, required=True, help="vendor/llama.cpp of the extracted sdist")
    parser.add_argument("--python", type=Path, required=True, help="the llama.cpp venv's python")
    parser.add_argument("--out", type=Path, default=Path("/work/llamacpp-models"))
    args = parser.parse_args()
    folder = hf_folder(args.tokenizer, args.out / f"{NAME}-hf")
    f16, q4 = args.out / f"{NAME}-f16.gguf", args.out / f"{NAME}-q4_0.gguf"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    convert = args.llama_cpp / "convert_hf_to_gguf.py"
    subprocess.run([args.python, convert, folder, "--outtype", "f16", "--outfile", f16], check=True, env=env)
    subprocess.run([args.python, "-c", QUANTIZE, f16, q4], check=True, env=env)
    print(f"{f16}\n{q4}")


if __name__ == "__main__":
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins" / "chat_qwen_awq")]
    main()
