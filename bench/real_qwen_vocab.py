r"""Build a tokenizer folder with the real Qwen2/2.5 vocabulary, for ``bench_chat.py --tokenizer``.

The byte-level BPE ships inside the llama-cpp-python 0.3.36 source distribution on the package
index (``vendor/llama.cpp/models/ggml-vocab-qwen2.gguf``); transformers reads it with the ``gguf``
package (not a project dependency: ``pip install gguf``). Its ids above 151645 are padding; the
added tokens of the real checkpoints (151646–151664, ``<tool_call>`` = 151657) are named here, and
the Qwen2.5 chat template is attached. Run::

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36   # or take the .tar.gz from pip's cache
    tar xzf llama_cpp_python-0.3.36.tar.gz --wildcards '*ggml-vocab-qwen2.gguf'
    .venv/bin/python bench/real_qwen_vocab.py \
        llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf /tmp/qwen-vocab
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

#: Added tokens 151646.. of Qwen2.5 (151643–151645 are in the gguf already).
ADDED = (
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
    "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
    "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)  # fmt: skip


def main(gguf: Path, out: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, Qwen2TokenizerFast

    from host.demo.chat_template import QWEN2_5_CHAT_TEMPLATE

    raw = Path(tempfile.mkdtemp())
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(raw))
    data = json.loads((raw / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    for i, name in enumerate(ADDED):
        tid = 151646 + i
        del vocab[f"[PAD{tid}]"]
        vocab[name] = tid
        data["added_tokens"].append(
            {
                "id": tid,
                "content": name,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": name not in ("<tool_call>", "</tool_call>"),  # as in the real tokenizer_config.json
            }
        )
    (raw / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    fast = Qwen2TokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(raw / "tokenizer.json")),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        chat_template=QWEN2_5_CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        errors="replace",
        split_special_tokens=False,
    )
    fast.save_pretrained(str(out), legacy_format=False, save_jinja_files=False)
    check = AutoTokenizer.from_pretrained(str(out))
    assert check.encode("yes") == [9693] and check.encode("<tool_call>") == [151657], "not the real vocabulary"
    print(f"{out}: {len(check)} tokens")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(Path(sys.argv[1]), Path(sys.argv[2]))
