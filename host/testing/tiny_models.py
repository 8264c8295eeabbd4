"""Tiny random-weight models of the real architectures, built offline.

The factory builds ordinary Hugging Face model folders (``config.json``, ``*.safetensors``,
tokenizer files, ``generation_config.json``) that ``AutoTokenizer.from_pretrained`` and
``AutoModel*.from_pretrained`` load like the published checkpoints:

* ``qwen2-chat``      – ``Qwen2ForCausalLM`` (fp16) + ChatML tokenizer + Qwen2.5-Instruct
                        generation config (stands in for Qwen2.5-7B-Instruct).
* ``qwen2-awq``       – the 4-bit AWQ GEMM checkpoint of exactly that fp16 model (same seed).
* ``qwen3-embedding`` – ``Qwen3Model`` (no lm_head) + a tokenizer whose post-processor appends
                        ``<|endoftext|>`` (stands in for Qwen3-Embedding-0.6B).
* ``qwen3-reranker``  – ``Qwen3ForCausalLM`` + plain tokenizer (stands in for Qwen3-Reranker-0.6B).

The tokenizer is a ~2,000-entry byte-level BPE trained on an embedded English + Chinese corpus,
with Qwen's special tokens. Token ids therefore differ from the real vocabulary: always look ids up
through the tokenizer.

Building a tiny model takes well under a second; :func:`tiny_model_cache` caches the folders on
disk (keyed by kind, shape, seed and :data:`FACTORY_VERSION`). Heavy imports (torch, transformers,
tokenizers, safetensors) happen inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from transformers import Qwen2Config, Qwen3Config

__all__ = [
    "AWQ_PACK_ORDER",
    "DEFAULT_SYSTEM_PROMPT",
    "ENDOFTEXT",
    "FACTORY_VERSION",
    "IM_END",
    "IM_START",
    "KINDS",
    "QWEN2_5_0_5B_SHAPE",
    "QWEN2_5_7B_SHAPE",
    "QWEN2_5_CHAT_TEMPLATE",
    "QWEN3_0_6B_SHAPE",
    "THINK_END",
    "THINK_START",
    "TINY_QWEN2",
    "TINY_QWEN3",
    "TOOL_CALL_END",
    "TOOL_CALL_START",
    "TinyShape",
    "awq_group_size",
    "build_qwen2_awq",
    "build_qwen2_chat",
    "build_qwen3_embedding",
    "build_qwen3_reranker",
    "build_tokenizer",
    "default_cache_root",
    "dequantize_awq",
    "pack_awq",
    "quantize_awq",
    "qwen2_config",
    "qwen3_config",
    "tiny_model_cache",
]

#: Bumped whenever the produced folders change; part of the cache key.
FACTORY_VERSION = 2

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_START = "<think>"
THINK_END = "</think>"
TOOL_CALL_START = "<tool_call>"  # single added tokens in the real vocabulary (151657/151658)
TOOL_CALL_END = "</tool_call>"

DEFAULT_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

#: Order in which AWQ's GEMM layout stores the 8 output columns of one int32 (nibble i holds
#: column ``AWQ_PACK_ORDER[i]`` of the pack).
AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)

#: The chat template shipped in Qwen2.5-*-Instruct's tokenizer_config.json (verbatim).
QWEN2_5_CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.'
    '\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    "    {%- for tool in tools %}\n"
    '        {{- "\\n" }}\n'
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and'
    ' arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\":'
    ' <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful"
    " assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or'
    ' (message.role == "assistant" and not message.tool_calls) %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    '    {%- elif message.role == "assistant" %}\n'
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    '            {{- \'\\n<tool_call>\\n{"name": "\' }}\n'
    "            {{- tool_call.name }}\n"
    '            {{- \'", "arguments": \' }}\n'
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# Qwen2's pre-tokenisation regex (from the published tokenizer.json).
_QWEN_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_BPE_VOCAB_SIZE = 2000  # incl. the 256 byte symbols; the 5 added tokens come on top.

# Small embedded training corpus (English + Chinese). Lines starting with bare "yes"/"no" make
# sure both words become single tokens, as in Qwen's vocabulary.
_CORPUS = """\
You are Qwen, created by Alibaba Cloud. You are a helpful assistant.
Judge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be "yes" or "no".
Instruct: Given a web search query, retrieve relevant passages that answer the query
Query: What is the capital of China?
Query: Explain gravity
Document: The capital of China is Beijing.
Document: Gravity is a force that attracts two bodies towards each other. It gives weight to physical objects and is responsible for the movement of planets around the sun.
yes
no
yes, the document answers the query.
no, the document does not answer the query.
yes or no? The answer is yes. The answer is no.
Is the sky blue? yes. Is fire cold? no. Can birds fly? yes. Can fish walk? no.
The quick brown fox jumps over the lazy dog. A large language model predicts the next token.
Machine learning is a field of study in artificial intelligence concerned with the development of statistical algorithms that can learn from data and generalize to unseen data.
Natural language processing helps computers understand, interpret and generate human language.
A search engine returns a ranked list of documents for every query. The best results come first.
An embedding is a vector of numbers that represents the meaning of a piece of text. Similar texts have similar vectors.
A reranker reads a query and a document together and outputs a relevance score between zero and one.
The weather today is sunny with a light breeze. Tomorrow it will rain in the morning and clear up in the afternoon.
Python is a programming language that lets you work quickly and integrate systems more effectively.
The server accepts requests over HTTP and returns JSON responses. Every request has a model name and a list of messages.
Please write a short poem about the sea. The waves roll in and out, the moon pulls the tide, and the gulls cry above the shore.
Hello! How can I help you today? Thank you very much. You are welcome. Good morning, good evening, good night.
What time is it? It is ten o'clock. How many people live in the city? About twenty million people live there.
The history of science is the study of the development of science and scientific knowledge, including both the natural and social sciences.
Water boils at one hundred degrees Celsius at sea level. Ice melts at zero degrees.
The Great Wall of China is a series of fortifications that were built across the historical northern borders of ancient Chinese states.
Shanghai is the largest city in China by population, and Beijing is the political and cultural center of the country.
The cat sat on the mat. The dog ran in the park. The children played games in the garden until dinner was ready.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024 3.14159 42.
Code: def add(a, b): return a + b  # returns the sum
{"name": "get_weather", "arguments": {"city": "Beijing", "unit": "celsius"}}
I think the answer is correct. Let me think step by step before I answer the question.
It's a nice day, isn't it? They're here, we've seen it, I'm sure, you'll see, he'd know.
你好，我是通义千问，由阿里云开发的人工智能助手。有什么可以帮助你的吗？
中国的首都是北京。北京是中国的政治、文化和国际交往中心。
上海是中国最大的城市之一，也是重要的经济、金融、贸易和航运中心。
重力是一种使两个物体相互吸引的力。它使物体具有重量，并使行星围绕太阳运动。
机器学习是人工智能的一个分支，研究如何让计算机从数据中学习规律并做出预测。
自然语言处理帮助计算机理解、解释和生成人类语言。
搜索引擎根据用户的查询返回相关的文档列表，最相关的结果排在最前面。
向量表示是一组数字，用来表示一段文本的含义。含义相近的文本具有相近的向量。
今天天气晴朗，微风轻拂。明天上午有雨，下午转晴。
请写一首关于大海的短诗。海浪涌来又退去，月亮牵引着潮汐，海鸥在岸边鸣叫。
长城是中国古代修建的军事防御工程，横跨中国北方的历史边界。
水在海平面上的沸点是一百摄氏度，冰在零度时融化。
谢谢你的帮助！不客气。早上好，晚上好，晚安。
我们今天学习了数学、语文和英语。老师说明天要考试，大家都在认真复习。
这个问题的答案是肯定的。这个问题的答案是否定的。是或者否。
春天来了，花开了，小鸟在树上唱歌。孩子们在公园里放风筝。
人工智能正在改变我们的生活和工作方式，从医疗到交通，从教育到娱乐。
模型服务器接收请求并返回结果。每个请求都包含模型名称和消息列表。
system
user
assistant
The system message sets the behaviour of the assistant; the user message asks a question and the assistant message answers it.
<Instruct>: Given a web search query, retrieve relevant passages that answer the query
<Query>: how much protein should a female eat
<Document>: As a general guideline, the average requirement of protein for women ages 19 to 70 is 46 grams per day.
Summarize the following article in three sentences. Translate this sentence into French. Answer the question using only the context below.
The company reported strong growth in revenue this quarter, driven by cloud services, advertising and new products.
Doctors recommend drinking enough water, sleeping at least seven hours a night and exercising regularly to stay healthy.
The train leaves the station at half past nine and arrives in the capital two hours later.
请用三句话总结下面的文章。把这句话翻译成英文。只根据下面的内容回答问题。
这家公司本季度收入增长强劲，主要来自云服务、广告和新产品。
医生建议多喝水，每晚至少睡七个小时，并且经常锻炼身体以保持健康。
火车九点半从车站出发，两个小时后到达首都。
"""


@dataclass(frozen=True)
class TinyShape:
    """Architecture sizes of a Qwen2/Qwen3 decoder.

    ``head_dim`` is only honoured by Qwen3 (Qwen2 always uses ``hidden_size //
    num_attention_heads``); ``None`` means that default. ``vocab_size`` must be at least the
    tokenizer's size; embedding rows beyond the tokenizer are simply never used.
    """

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int | None = None
    vocab_size: int = 2048
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True

    @property
    def resolved_head_dim(self) -> int:
        """``head_dim`` if set, else ``hidden_size // num_attention_heads``."""
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_attention_heads


#: Tiny Qwen2 (untied lm_head, like Qwen2.5-7B). All linear in-features are multiples of 32.
TINY_QWEN2 = TinyShape(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    vocab_size=2048,
    max_position_embeddings=2048,
    tie_word_embeddings=False,
)

#: Tiny Qwen3 (tied embeddings and head_dim * heads != hidden, like Qwen3-0.6B).
TINY_QWEN3 = TinyShape(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    vocab_size=2048,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)

#: Qwen3-Embedding-0.6B / Qwen3-Reranker-0.6B sizes.
QWEN3_0_6B_SHAPE = TinyShape(
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=151669,
    max_position_embeddings=32768,
    tie_word_embeddings=True,
)

#: Qwen2.5-0.5B-Instruct sizes.
QWEN2_5_0_5B_SHAPE = TinyShape(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    head_dim=64,
    vocab_size=151936,
    max_position_embeddings=32768,
    tie_word_embeddings=True,
)

#: Qwen2.5-7B-Instruct sizes (meant for configs / meta-device sizing; never materialise it).
QWEN2_5_7B_SHAPE = TinyShape(
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    head_dim=128,
    vocab_size=152064,
    max_position_embeddings=32768,
    tie_word_embeddings=False,
)

KINDS = ("qwen2-chat", "qwen2-awq", "qwen3-embedding", "qwen3-reranker")

_INIT_STD = 0.02


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def _train_bpe() -> Any:
    """Train the byte-level BPE (a ``tokenizers.Tokenizer``) with Qwen's pipeline and tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    lines = [line for line in _CORPUS.splitlines() if line]
    # Repeat so that frequent pairs clearly dominate (keeps merges stable and "yes"/"no" whole).
    tok.train_from_iterator(lines * 4, trainer=trainer)
    # Same order as Qwen: <|endoftext|>, <|im_start|>, <|im_end|> (special), then the non-special
    # <think>/</think> and <tool_call>/</tool_call> (single tokens, decoded as text like the real ones).
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (ENDOFTEXT, IM_START, IM_END)])
    tok.add_tokens(
        [
            AddedToken(t, special=False, normalized=False)
            for t in (THINK_START, THINK_END, TOOL_CALL_START, TOOL_CALL_END)
        ]
    )
    return tok


def build_tokenizer(
    dest: Path,
    *,
    append_eos: bool = False,
    eos_token: str = ENDOFTEXT,
    model_max_length: int = 32768,
) -> Path:
    """Write a Qwen-style byte-level BPE tokenizer folder to ``dest`` and return ``dest``.

    The folder holds ``tokenizer.json``, ``tokenizer_config.json`` (``tokenizer_class``
    ``Qwen2Tokenizer``, the Qwen2.5-Instruct ChatML ``chat_template``, ``padding_side`` left),
    ``special_tokens_map.json`` and ``vocab.json``/``merges.txt``. ``<|endoftext|>`` is the pad
    token and (by default) the eos token; ``<|im_start|>``/``<|im_end|>`` are additional special
    tokens; ``<think>``/``</think>`` are added non-special tokens. With ``append_eos`` the
    post-processor appends ``<|endoftext|>`` to every sequence (like Qwen3-Embedding's tokenizer);
    otherwise no special tokens are added when encoding.
    """
    from tokenizers import processors
    from transformers import Qwen2TokenizerFast

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tok = _train_bpe()
    if append_eos:
        eot = tok.token_to_id(ENDOFTEXT)
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A:0 {ENDOFTEXT}:0",
            pair=f"$A:0 {ENDOFTEXT}:0 $B:1 {ENDOFTEXT}:1",
            special_tokens=[(ENDOFTEXT, eot)],
        )
    for word in ("yes", "no"):
        if len(tok.encode(word).ids) != 1 + (1 if append_eos else 0):
            raise RuntimeError(f"tiny tokenizer: {word!r} is not a single token")
    fast = Qwen2TokenizerFast(
        tokenizer_object=tok,
        unk_token=None,
        bos_token=None,
        eos_token=eos_token,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START, IM_END],
        padding_side="left",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        errors="replace",
        model_max_length=model_max_length,
        chat_template=QWEN2_5_CHAT_TEMPLATE,
    )
    # legacy_format=False: no vocab.json/merges.txt/added_tokens.json (tokenizer.json has it all);
    # save_jinja_files=False: keep chat_template inside tokenizer_config.json like the real repos
    # (transformers >= 4.56 otherwise writes a separate chat_template.jinja).
    fast.save_pretrained(str(dest), legacy_format=False, save_jinja_files=False)
    return dest


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


def qwen2_config(shape: TinyShape = TINY_QWEN2, **overrides: Any) -> Qwen2Config:
    """A ``transformers.Qwen2Config`` for ``shape`` (fp16, rope_theta 1e6, no sliding window).

    ``overrides`` are passed to the config (e.g. ``bos_token_id``/``eos_token_id``).
    """
    from transformers import Qwen2Config

    if shape.head_dim is not None and shape.head_dim * shape.num_attention_heads != shape.hidden_size:
        raise ValueError("Qwen2 requires head_dim * num_attention_heads == hidden_size")
    kwargs: dict[str, Any] = dict(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=shape.tie_word_embeddings,
        hidden_act="silu",
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        initializer_range=_INIT_STD,
        use_cache=True,
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=shape.num_hidden_layers,
        attention_dropout=0.0,
        dtype="float16",
        architectures=["Qwen2ForCausalLM"],
    )
    kwargs.update(overrides)
    return Qwen2Config(**kwargs)


def qwen3_config(shape: TinyShape = TINY_QWEN3, **overrides: Any) -> Qwen3Config:
    """A ``transformers.Qwen3Config`` for ``shape`` (fp16, explicit head_dim, rope_theta 1e6)."""
    from transformers import Qwen3Config

    kwargs: dict[str, Any] = dict(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        head_dim=shape.resolved_head_dim,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=shape.tie_word_embeddings,
        hidden_act="silu",
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        attention_bias=False,
        initializer_range=_INIT_STD,
        use_cache=True,
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=shape.num_hidden_layers,
        attention_dropout=0.0,
        dtype="float16",
        architectures=["Qwen3ForCausalLM"],
    )
    kwargs.update(overrides)
    return Qwen3Config(**kwargs)


# --------------------------------------------------------------------------------------------
# Model materialisation
# --------------------------------------------------------------------------------------------


def _token_ids(tok_dir: Path) -> dict[str, int]:
    """Ids of the special tokens in the tokenizer saved at ``tok_dir``."""
    data = json.loads((Path(tok_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    ids = {t["content"]: t["id"] for t in data["added_tokens"]}
    ids["__size__"] = max(ids.values()) + 1
    return ids


def _instantiate(model_cls: Any, config: Any, seed: int) -> Any:
    """Create ``model_cls(config)`` in fp16 with deterministic random weights.

    Every parameter is drawn from its own generator seeded by (seed, parameter name), so weights
    do not depend on construction order: linear/embedding weights ~ N(0, 0.02), biases ~
    N(0, 0.02), norm weights = 1. Skips transformers' own (slow, doubled) initialisation.
    """
    import torch
    from transformers.modeling_utils import no_init_weights

    old_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        with no_init_weights():
            model = model_cls(config)
    finally:
        torch.set_default_dtype(old_dtype)
    # no_init_weights() also skips post_init's tie_weights(): tie explicitly (tied lm_head).
    model.tie_weights()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.fill_(1.0)
                continue
            gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            values = torch.randn(param.shape, generator=gen, dtype=torch.float32) * _INIT_STD
            param.copy_(values.to(param.dtype))
    model.eval()
    return model


def _save_model(model: Any, dest: Path) -> None:
    model.save_pretrained(str(dest), safe_serialization=True)


def _generation_config_qwen25(ids: dict[str, int]) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=ids[ENDOFTEXT],
        pad_token_id=ids[ENDOFTEXT],
        do_sample=True,
        eos_token_id=[ids[IM_END], ids[ENDOFTEXT]],
        repetition_penalty=1.05,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
    )


def _check_vocab(shape: TinyShape, ids: dict[str, int]) -> None:
    if shape.vocab_size < ids["__size__"]:
        raise ValueError(f"shape.vocab_size={shape.vocab_size} < tokenizer size {ids['__size__']}")


def _qwen2_fp16_model(dest: Path, shape: TinyShape, seed: int) -> tuple[Any, dict[str, int]]:
    """Write the chat tokenizer to ``dest`` and return (fp16 Qwen2ForCausalLM, special ids)."""
    from transformers import Qwen2ForCausalLM

    build_tokenizer(dest, eos_token=IM_END, model_max_length=shape.max_position_embeddings)
    ids = _token_ids(dest)
    _check_vocab(shape, ids)
    config = qwen2_config(shape, bos_token_id=ids[ENDOFTEXT], eos_token_id=ids[IM_END])
    model = _instantiate(Qwen2ForCausalLM, config, seed)
    model.generation_config = _generation_config_qwen25(ids)
    return model, ids


def build_qwen2_chat(dest: Path, shape: TinyShape = TINY_QWEN2, seed: int = 0) -> Path:
    """Build a random fp16 ``Qwen2ForCausalLM`` chat model folder at ``dest``; returns ``dest``.

    Includes the ChatML tokenizer (eos ``<|im_end|>``, pad ``<|endoftext|>``, as in
    Qwen2.5-Instruct) and Qwen2.5-Instruct's generation_config.json (eos ids
    [im_end, endoftext], do_sample, temperature 0.7, top_p 0.8, top_k 20, repetition_penalty 1.05).
    """
    dest = Path(dest)
    model, _ = _qwen2_fp16_model(dest, shape, seed)
    _save_model(model, dest)
    return dest


def awq_group_size(shape: TinyShape) -> int:
    """Default AWQ group size for ``shape``: the largest of (128, 64, 32, 16) that divides every
    quantised in_features and leaves at least two groups per column (so group handling is
    exercised). 128 for the real shapes, 32 for the tiny presets."""
    in_features = {shape.hidden_size, shape.intermediate_size, shape.num_attention_heads * shape.resolved_head_dim}
    for g in (128, 64, 32, 16):
        if all(f % g == 0 and f // g >= 2 for f in in_features):
            return g
    raise ValueError(f"no AWQ group size fits in_features {sorted(in_features)}")


def quantize_awq(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit per-group quantisation of a ``[out, in]`` linear weight, as AutoAWQ does.

    Returns ``(intweight [out, in], zeros [out, in/G], scales [out, in/G])``: int32 codes in
    0..15, int32 zero points in 0..15 and fp16 scales, with ``W ≈ (intweight - zeros) * scales``.
    Scales are rounded to fp16 before the codes are computed, so the stored checkpoint
    dequantises to the nearest grid point.
    """
    import torch

    out_f, in_f = weight.shape
    if in_f % group_size:
        raise ValueError(f"in_features {in_f} is not a multiple of group_size {group_size}")
    w = weight.detach().float().reshape(out_f, in_f // group_size, group_size)
    max_val = w.amax(dim=2, keepdim=True)
    min_val = w.amin(dim=2, keepdim=True)
    scales = ((max_val - min_val).clamp(min=1e-5) / 15).half().float()
    zeros = (-torch.round(min_val / scales)).clamp(0, 15)
    q = (torch.round(w / scales) + zeros).clamp(0, 15)
    return (
        q.reshape(out_f, in_f).to(torch.int32),
        zeros.squeeze(2).to(torch.int32),
        scales.squeeze(2).half(),
    )


def _pack_columns(values: torch.Tensor) -> torch.Tensor:
    """Pack int codes ``[rows, cols]`` (0..15) into int32 ``[rows, cols/8]`` in AWQ order."""
    import torch

    rows, cols = values.shape
    if cols % 8:
        raise ValueError(f"{cols} columns is not a multiple of 8")
    v = values.to(torch.int64).reshape(rows, cols // 8, 8)
    packed = torch.zeros(rows, cols // 8, dtype=torch.int64)
    for i, col in enumerate(AWQ_PACK_ORDER):
        packed |= (v[:, :, col] & 0xF) << (4 * i)
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)  # reinterpret as signed int32
    return packed.to(torch.int32)


def pack_awq(
    intweight: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack :func:`quantize_awq` output into AutoAWQ's GEMM layout.

    Returns ``(qweight int32 [in, out/8], qzeros int32 [in/G, out/8], scales fp16 [in/G, out])``.
    """
    return (
        _pack_columns(intweight.t().contiguous()),
        _pack_columns(zeros.t().contiguous()),
        scales.t().contiguous().half(),
    )


def dequantize_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """Dequantise an AWQ GEMM-packed 4-bit weight (plain torch, any device).

    Takes ``qweight`` int32 ``[in, out/8]``, ``qzeros`` int32 ``[in/G, out/8]``, ``scales``
    ``[in/G, out]``; returns ``[in, out]`` in ``scales.dtype`` — the TRANSPOSE of the
    ``nn.Linear`` weight, same orientation and (bit-exact) values as
    ``awq.utils.packing_utils.dequantize_gemm``; ``y = x @ W + b``.
    """
    import torch

    def unpack(packed: torch.Tensor) -> torch.Tensor:
        rows, packs = packed.shape
        out = torch.empty(rows, packs, 8, dtype=torch.int32, device=packed.device)
        p = packed.to(torch.int32)
        for i, col in enumerate(AWQ_PACK_ORDER):
            out[:, :, col] = (p >> (4 * i)) & 0xF
        return out.reshape(rows, packs * 8)

    iweight = unpack(qweight)
    izeros = unpack(qzeros).repeat_interleave(group_size, dim=0)
    s = scales.repeat_interleave(group_size, dim=0)
    return ((iweight - izeros).to(torch.float32) * s.to(torch.float32)).to(scales.dtype)


_AWQ_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build_qwen2_awq(dest: Path, shape: TinyShape = TINY_QWEN2, seed: int = 0, group_size: int | None = None) -> Path:
    """Build the 4-bit AWQ GEMM checkpoint of :func:`build_qwen2_chat`'s model (same seed → same
    fp16 weights) at ``dest``; returns ``dest``.

    Every decoder-layer linear (q/k/v/o/gate/up/down) is stored as ``qweight``/``qzeros``/
    ``scales`` (+ fp16 ``bias`` where the layer has one); embeddings, norms and lm_head stay fp16.
    config.json carries ``quantization_config`` = {quant_method awq, bits 4, group_size G,
    zero_point true, version gemm, modules_to_not_convert null}. ``group_size`` defaults to
    :func:`awq_group_size`.
    """
    from safetensors.torch import save_file

    dest = Path(dest)
    g = group_size if group_size is not None else awq_group_size(shape)
    model, _ = _qwen2_fp16_model(dest, shape, seed)
    tensors: dict[str, Any] = {}
    for name, tensor in model.state_dict().items():
        parts = name.split(".")
        if len(parts) >= 2 and parts[-2] in _AWQ_LINEARS and parts[-1] == "weight":
            prefix = name[: -len(".weight")]
            intweight, zeros, scales = quantize_awq(tensor, g)
            qweight, qzeros, pscales = pack_awq(intweight, zeros, scales)
            tensors[prefix + ".qweight"] = qweight
            tensors[prefix + ".qzeros"] = qzeros
            tensors[prefix + ".scales"] = pscales
        else:
            tensors[name] = tensor.detach().contiguous()
    if shape.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    config.quantization_config = {
        "quant_method": "awq",
        "bits": 4,
        "group_size": g,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": None,
    }
    config.save_pretrained(str(dest))
    model.generation_config.save_pretrained(str(dest))
    return dest


def build_qwen3_embedding(dest: Path, shape: TinyShape = TINY_QWEN3, seed: int = 0) -> Path:
    """Build a random fp16 ``Qwen3Model`` (base model, no lm_head) folder at ``dest``; returns
    ``dest``. Its tokenizer appends ``<|endoftext|>`` to every input (``append_eos=True``)."""
    from transformers import Qwen3Model

    dest = Path(dest)
    build_tokenizer(dest, append_eos=True, model_max_length=shape.max_position_embeddings)
    ids = _token_ids(dest)
    _check_vocab(shape, ids)
    config = qwen3_config(shape, bos_token_id=ids[ENDOFTEXT], eos_token_id=ids[ENDOFTEXT], architectures=["Qwen3Model"])
    model = _instantiate(Qwen3Model, config, seed)
    _save_model(model, dest)
    return dest


_SPREAD_MAX_PARAMS = 50_000_000

_RERANK_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
_RERANK_PROBES = (
    ("What is the capital of China?", "The capital of China is Beijing."),
    ("What is the capital of China?", "Gravity is a force that attracts two bodies towards each other."),
    ("Explain gravity", "Gravity is a force that attracts two bodies towards each other."),
    ("Explain gravity", "The capital of China is Beijing."),
    ("中国的首都是哪里？", "中国的首都是北京。"),
    ("中国的首都是哪里？", "今天天气晴朗，微风轻拂。"),
    ("What is machine learning?", "机器学习是人工智能的一个分支。"),
    ("hello", "The cat sat on the mat."),
)


def _rerank_text(query: str, doc: str) -> str:
    instruction = "Given a web search query, retrieve relevant passages that answer the query"
    return (
        f"<|im_start|>system\n{_RERANK_SYSTEM}<|im_end|>\n<|im_start|>user\n"
        f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def _spread_yes_no(model: Any, tok_dir: Path, seed: int, num_probes: int = 64) -> None:
    """Re-aim the lm_head rows of "yes"/"no" so reranker scores vary clearly across inputs.

    With N(0, 0.02) weights the final hidden state is dominated by the (always identical) last
    template token, so sigmoid(logit_yes - logit_no) would be ~0.5 for every input. Keeping the two
    rows' mean, their difference is set to a random direction (deterministic in ``seed``) made
    orthogonal to the mean final hidden state of ``num_probes`` reranker prompts built from corpus
    lines, and scaled so that the logit difference has std ~2 over those probes. Scores of unseen
    inputs then spread over roughly 0.05..0.95 around 0.5.
    """
    import random

    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    yes_id = tok.convert_tokens_to_ids("yes")
    no_id = tok.convert_tokens_to_ids("no")
    rng = random.Random(seed)
    lines = [line for line in _CORPUS.splitlines() if line.strip()]
    pairs = list(_RERANK_PROBES)
    pairs += [(rng.choice(lines)[:60], rng.choice(lines)) for _ in range(num_probes)]
    texts = [_rerank_text(q, d) for q, d in pairs]
    with torch.no_grad():
        hidden = []
        for i in range(0, len(texts), 32):
            enc = tok(texts[i : i + 32], return_tensors="pt", padding=True)
            out = model.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            hidden.append(out.last_hidden_state[:, -1].float())
        h = torch.cat(hidden)  # [probes, hidden]
        mean_h = h.mean(dim=0)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(b"yes-no"))
        diff = torch.randn(h.shape[1], generator=gen)
        diff = diff - (mean_h @ diff) / (mean_h @ mean_h) * mean_h
        diff = diff * (2.0 / ((h - mean_h) @ diff).std().clamp(min=1e-6))
        weight = model.get_output_embeddings().weight
        centre = (weight[yes_id].float() + weight[no_id].float()) / 2
        weight[yes_id] = (centre + diff / 2).to(weight.dtype)
        weight[no_id] = (centre - diff / 2).to(weight.dtype)


def build_qwen3_reranker(dest: Path, shape: TinyShape = TINY_QWEN3, seed: int = 0) -> Path:
    """Build a random fp16 ``Qwen3ForCausalLM`` reranker folder at ``dest``; returns ``dest``.

    Plain tokenizer (no eos appended). For small models (<= 50M parameters) the "yes"/"no"
    lm_head rows are adjusted (see ``_spread_yes_no``) so that P(yes) varies clearly between
    inputs; with tied embeddings this also changes the input embeddings of "yes"/"no". Real-shaped
    (benchmark) models skip that step: running probes through them on CPU would be slow.
    """
    from transformers import Qwen3ForCausalLM

    dest = Path(dest)
    build_tokenizer(dest, model_max_length=shape.max_position_embeddings)
    ids = _token_ids(dest)
    _check_vocab(shape, ids)
    config = qwen3_config(shape, bos_token_id=ids[ENDOFTEXT], eos_token_id=ids[ENDOFTEXT])
    model = _instantiate(Qwen3ForCausalLM, config, seed)
    if sum(p.numel() for p in model.parameters()) <= _SPREAD_MAX_PARAMS:
        _spread_yes_no(model, dest, seed)
    _save_model(model, dest)
    return dest


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------

_BUILDERS = {
    "qwen2-chat": (build_qwen2_chat, TINY_QWEN2),
    "qwen2-awq": (build_qwen2_awq, TINY_QWEN2),
    "qwen3-embedding": (build_qwen3_embedding, TINY_QWEN3),
    "qwen3-reranker": (build_qwen3_reranker, TINY_QWEN3),
}


def tiny_config_dict(kind: str) -> dict[str, Any]:
    """The ``config.json`` essentials of a default tiny ``kind``, without building it (no torch).

    Declarations use it to size the demo stand-ins the way they size real weights.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown tiny model kind {kind!r}; expected one of {', '.join(KINDS)}")
    shape = _BUILDERS[kind][1]
    config: dict[str, Any] = {
        **dataclasses.asdict(shape),
        "head_dim": shape.resolved_head_dim,
        "model_type": kind.split("-")[0],
        "torch_dtype": "float16",
    }
    if kind == "qwen2-awq":
        config["quantization_config"] = {
            "quant_method": "awq",
            "bits": 4,
            "group_size": awq_group_size(shape),
            "zero_point": True,
            "version": "gemm",
            "modules_to_not_convert": None,
        }
    return config


def default_cache_root() -> Path:
    """``$PLUGHOST_CACHE_DIR`` if set, else ``~/.cache/plughost/tiny``."""
    env = os.environ.get("PLUGHOST_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "plughost" / "tiny"


def tiny_model_cache(kind: str, shape: TinyShape | None = None, root: Path | None = None, *, seed: int = 0) -> Path:
    """Return the folder of a tiny model of ``kind`` (one of :data:`KINDS`), building it on first use.

    ``shape`` defaults to :data:`TINY_QWEN2` for qwen2 kinds and :data:`TINY_QWEN3` for qwen3
    kinds; ``root`` to :func:`default_cache_root`. The folder is ``root/<kind>-<hash>`` where the
    hash covers (kind, shape, seed, FACTORY_VERSION). It is built in a temporary sibling folder and
    renamed into place atomically, so concurrent processes never see a half-built model.
    """
    try:
        builder, default_shape = _BUILDERS[kind]
    except KeyError:
        raise ValueError(f"unknown tiny model kind {kind!r}; expected one of {KINDS}") from None
    shape = shape if shape is not None else default_shape
    root = Path(root) if root is not None else default_cache_root()
    key = json.dumps(
        {"kind": kind, "shape": dataclasses.asdict(shape), "seed": seed, "version": FACTORY_VERSION},
        sort_keys=True,
    )
    final = root / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        builder(tmp, shape, seed)
        (tmp / "tiny_model.json").write_text(key + "\n", encoding="utf-8")
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
