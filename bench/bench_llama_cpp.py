r"""llama.cpp's CPU chat decode on the Qwen2.5-0.5B shape, to set beside ``bench_chat.py``'s figures.

It loads a GGUF of plughost's random Qwen2.5-0.5B-shaped chat model (``make_llama_gguf.py``: the
weights ``bench_chat.py`` serves, in llama.cpp's Q4_0) through llama-cpp-python with one thread
(``n_threads`` and ``n_threads_batch``), and for each prompt of ``bench_chat.PROMPTS`` renders the
Qwen2.5 chat template (the default system prompt, the user message, the assistant header),
generates 64 tokens greedily (temperature 0, no repetition penalty) and times them:

- TTFT: from the call to the first token, the whole prompt prefilled (cold: the context is reset);
- TTFT with the prompt cached: the same prompt again right after, llama-cpp-python's own prefix
  reuse leaving one token to decode (what ``bench_chat.py``'s engine gets from its prefix cache
  when it repeats a prompt);
- decode tokens/s: the tokens after the first over the time after the first (EOS is ignored: the
  generator is consumed for 64 tokens whatever comes, so every answer has 64 tokens);
- end-to-end tokens/s: 64 tokens over the cold run's whole time.

Each figure is the best of ``--repeats`` (machine noise only ever slows a run down). The
"1 stream" line is ``PROMPTS[0]``, the prompt of ``bench_chat.py``'s 1-stream line. Comparing TTFT:
``bench_chat.py`` serves the demo tokenizer (the prompts tokenize differently from the real
vocabulary here), and its engine's 1-stream TTFT repeats one prompt, so its prefix cache (32-token
blocks) serves part of it; its raw ``generate`` TTFT is a cold prefill.

Set up (a separate venv, not a project dependency; details in ``make_llama_gguf.py``)::

    python3 -m venv /work/llamacpp-venv
    /work/llamacpp-venv/bin/pip install gguf numpy sentencepiece safetensors torch==2.13.0 \
        transformers==4.56.2 llama_cpp_python-0.3.36.tar.gz      # compiles llama.cpp (-march=native)
    HF_HUB_OFFLINE=1 .venv/bin/python bench/make_llama_gguf.py --tokenizer /tmp/qwen-vocab \
        --llama-cpp /tmp/llama_cpp_python-0.3.36/vendor/llama.cpp \
        --python /work/llamacpp-venv/bin/python --out /work/llamacpp-models

Run::

    OMP_NUM_THREADS=1 /work/llamacpp-venv/bin/python bench/bench_llama_cpp.py \
        --model /work/llamacpp-models/qwen2.5-0.5b-random-q4_0.gguf
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import llama_cpp
from prompts import PROMPTS  # bench/prompts.py: the script's own folder is on sys.path

SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def chat_prompt(user: str) -> str:
    """Qwen2.5's chat template for one user message (no tools), generation prompt appended."""
    return f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


@dataclasses.dataclass
class Run:
    """One generation: seconds to the first token and to the last, and the token count."""

    ttft: float
    end: float
    tokens: int

    @property
    def decode_rate(self) -> float:
        """Tokens per second after the first one."""
        return (self.tokens - 1) / (self.end - self.ttft)


def generate(llm: llama_cpp.Llama, prompt: list[int], tokens: int, reset: bool) -> Run:
    """``tokens`` greedy tokens after ``prompt``; ``reset=False`` lets llama-cpp-python reuse its cached prefix."""
    if reset:
        llm.reset()
    start = time.perf_counter()
    ttft, count = 0.0, 0
    for _ in llm.generate(prompt, temp=0.0, repeat_penalty=1.0, reset=True):
        count += 1
        if count == 1:
            ttft = time.perf_counter() - start
        if count == tokens:
            break
    return Run(ttft=ttft, end=time.perf_counter() - start, tokens=count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="the GGUF file")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per answer")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    llm = llama_cpp.Llama(
        model_path=str(args.model),
        n_ctx=512,
        n_batch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    print(f"llama-cpp-python {llama_cpp.__version__}: {llama_cpp.llama_print_system_info().decode().strip()}")
    prompts = [llm.tokenize(chat_prompt(p).encode(), add_bos=False, special=True) for p in PROMPTS]
    generate(llm, prompts[0], 4, reset=True)  # warm-up
    cold: list[list[Run]] = [[] for _ in prompts]
    cached: list[list[Run]] = [[] for _ in prompts]
    for _ in range(args.repeats):
        for i, ids in enumerate(prompts):
            cold[i].append(generate(llm, ids, args.tokens, reset=True))
            cached[i].append(generate(llm, ids, args.tokens, reset=False))
    layers = llm.metadata.get("qwen2.block_count", "?")
    print(
        f"\n== llama.cpp {llm._model.desc()} ({args.model.name}, {layers} layers, {args.tokens} tokens per stream, "
        f"{args.threads} thread(s)) =="
    )
    rows = []
    for i, (ids, c, w) in enumerate(zip(prompts, cold, cached)):
        ttft = min(r.ttft for r in c) * 1e3
        ttft_cached = min(r.ttft for r in w) * 1e3
        decode = max(r.decode_rate for r in c + w)
        e2e = max(r.tokens / r.end for r in c)
        assert all(r.tokens == args.tokens for r in c + w)
        rows.append((ttft, ttft_cached, decode, e2e))
        label = "1 stream (prompt 1)" if i == 0 else f"prompt {i + 1}"
        print(
            f"{label:<20}: {len(ids):3d} prompt tokens   TTFT {ttft:7.1f} ms (cached prompt {ttft_cached:5.1f} ms)"
            f"   decode {decode:6.1f} tok/s   end-to-end {e2e:6.1f} tok/s  ({args.tokens} tokens)"
        )
    med = [statistics.median(col) for col in zip(*rows)]
    print(
        f"{'median of the prompts':<20}:                     TTFT {med[0]:7.1f} ms (cached prompt {med[1]:5.1f} ms)"
        f"   decode {med[2]:6.1f} tok/s   end-to-end {med[3]:6.1f} tok/s"
    )
    print(f"(best of {args.repeats} repeats per prompt; decode: best of the cold and cached runs)")


if __name__ == "__main__":
    main()
