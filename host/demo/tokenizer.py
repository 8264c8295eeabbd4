"""The demo tokenizer: a ~2,000-entry byte-level BPE with Qwen's pipeline and special tokens.

Trained on an embedded English + Chinese corpus, so token ids differ from the real vocabulary:
always look ids up through the tokenizer. Heavy imports (tokenizers, transformers) happen inside
the functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from host.demo.chat_template import QWEN2_5_CHAT_TEMPLATE

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_START = "<think>"
THINK_END = "</think>"
TOOL_CALL_START = "<tool_call>"  # single added tokens in the real vocabulary (151657/151658)
TOOL_CALL_END = "</tool_call>"

# Qwen2's pre-tokenisation regex (from the published tokenizer.json).
_QWEN_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_BPE_VOCAB_SIZE = 2000  # incl. the 256 byte symbols; the 7 added tokens come on top.

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


def corpus_lines() -> list[str]:
    """The non-empty lines of the training corpus (builders draw probe texts from it)."""
    return [line for line in _CORPUS.splitlines() if line.strip()]


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
    added = (THINK_START, THINK_END, TOOL_CALL_START, TOOL_CALL_END)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])
    return tok


def build_tokenizer(
    dest: Path,
    *,
    append_eos: bool = False,
    eos_token: str = ENDOFTEXT,
    model_max_length: int = 32768,
    chat_template: str = QWEN2_5_CHAT_TEMPLATE,
) -> Path:
    """Write a Qwen-style byte-level BPE tokenizer folder to ``dest`` and return ``dest``.

    The folder holds ``tokenizer.json``, ``tokenizer_config.json`` (``tokenizer_class``
    ``Qwen2Tokenizer``, ``chat_template`` — Qwen2.5-Instruct's ChatML one unless another is given
    (:mod:`host.demo.chat_template`), ``padding_side`` left),
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
        chat_template=chat_template,
    )
    # legacy_format=False: no vocab.json/merges.txt/added_tokens.json (tokenizer.json has it all);
    # save_jinja_files=False: keep chat_template inside tokenizer_config.json like the real repos
    # (transformers >= 4.56 otherwise writes a separate chat_template.jinja).
    fast.save_pretrained(str(dest), legacy_format=False, save_jinja_files=False)
    return dest


def token_ids(tok_dir: Path) -> dict[str, int]:
    """Ids of the added tokens in the tokenizer saved at ``tok_dir`` (``__size__``: the vocabulary size)."""
    data = json.loads((Path(tok_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    ids = {t["content"]: t["id"] for t in data["added_tokens"]}
    ids["__size__"] = max(ids.values()) + 1
    return ids
