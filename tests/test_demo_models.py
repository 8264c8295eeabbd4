"""Tests of the demo models: host.demo and the plugins' stand-ins (offline, CPU, 1 thread, a few seconds)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from chat_qwen_awq.demo import TINY_AWQ, TINY_FP16, awq_group_size  # noqa: E402
from chat_qwen_awq.demo import build_fp16 as build_qwen2_chat  # noqa: E402
from embed_qwen3.demo import TINY as TINY_EMBED  # noqa: E402
from host.demo import DemoModel  # noqa: E402
from host.demo.cache import cached_build, default_cache_root  # noqa: E402
from host.demo.chat_template import QWEN2_5_CHAT_TEMPLATE  # noqa: E402
from host.demo.shapes import (  # noqa: E402
    QWEN2_5_0_5B_SHAPE,
    QWEN2_5_7B_SHAPE,
    QWEN3_0_6B_SHAPE,
    TINY_QWEN2,
    TINY_QWEN3,
    qwen2_config,
    qwen3_config,
)
from rerank_qwen3.demo import TINY as TINY_RERANK  # noqa: E402
from rerank_qwen3.prompt import DEFAULT_INSTRUCTION, render  # noqa: E402

#: The stand-ins by their cache names.
DEMOS: dict[str, DemoModel] = {d.name: d for d in (TINY_FP16, TINY_AWQ, TINY_EMBED, TINY_RERANK)}


def _import_awq() -> None:
    """Import autoawq without letting it touch the process' warning filters.

    ``import awq`` runs ``warnings.simplefilter("default", DeprecationWarning)`` (a global filter
    that would override pytest's) and warns about its own deprecation.
    """
    import warnings

    with warnings.catch_warnings(record=True):  # swallow, and undo awq's simplefilter on exit
        pytest.importorskip("awq")
        import awq.modules.linear.gemm
        import awq.utils.packing_utils  # noqa: F401


EOT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="module")
def models(cache_root: Path) -> dict[str, Path]:
    return {name: demo.folder(cache_root) for name, demo in DEMOS.items()}


def _tok(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


# ------------------------------------------------------------------------------------ tokenizer


def test_module_import_is_cheap() -> None:
    import subprocess
    import sys

    code = (
        "import sys, host.contract.spec; before = set(sys.modules); import host.sdk, host.demo, host.toolkit.weights, "
        "chat_qwen_awq.demo, embed_qwen3.demo, rerank_qwen3.demo, chat_qwen_awq, embed_qwen3, rerank_qwen3; "
        "heavy = ('torch', 'transformers', 'tokenizers', 'safetensors', 'awq'); "
        "bad = [m for m in set(sys.modules) - before if m.split('.')[0] in heavy]; "
        "assert not bad, bad"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})


def test_production_code_never_imports_the_test_kit() -> None:
    """host/ (but host/testing) and the plugins' packages (but their ``testing`` modules) do not
    import ``host.testing``."""
    import ast

    root = Path(__file__).resolve().parents[1]
    files = [p for p in (root / "host").rglob("*.py") if "testing" not in p.relative_to(root / "host").parts]
    files += [p for p in root.glob("plugins/*/*/*.py") if p.parent.name != "tests" and p.name != "testing.py"]
    assert len(files) > 20
    offenders = []
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{file.relative_to(root)}: {n}" for n in names if n.split(".")[:2] == ["host", "testing"]]
    assert not offenders


def test_tokenizer_special_tokens(models: dict[str, Path]) -> None:
    tok = _tok(models["qwen3-reranker"])
    assert type(tok).__name__ == "Qwen2TokenizerFast"
    assert tok.eos_token == EOT and tok.pad_token == EOT
    assert tok.bos_token is None and tok.unk_token is None
    assert tok.padding_side == "left"
    assert set(tok.additional_special_tokens) == {IM_START, IM_END}
    assert set(tok.all_special_tokens) == {EOT, IM_START, IM_END}
    added = {t.content: t for t in tok.added_tokens_decoder.values()}
    for special in (EOT, IM_START, IM_END):
        assert added[special].special
    for plain in ("<think>", "</think>"):
        assert not added[plain].special
        assert tok.tokenize(f"a{plain}b")[1] == plain  # matched as one added token
    assert len(tok) <= TINY_QWEN3.vocab_size
    assert 1900 <= len(tok) <= 2100
    # the chat tokenizer stops on <|im_end|>, like Qwen2.5-Instruct
    chat = _tok(models["qwen2-chat"])
    assert chat.eos_token == IM_END and chat.pad_token == EOT
    # folder layout of the published repos (template inside tokenizer_config.json)
    cfg = json.loads((models["qwen2-chat"] / "tokenizer_config.json").read_text())
    assert cfg["chat_template"] == QWEN2_5_CHAT_TEMPLATE
    assert cfg["tokenizer_class"] == "Qwen2Tokenizer"
    assert not (models["qwen2-chat"] / "chat_template.jinja").exists()


def test_tokenizer_roundtrip_unicode(models: dict[str, Path]) -> None:
    tok = _tok(models["qwen3-reranker"])
    for text in (
        "中国的首都是北京。重力是一种使两个物体相互吸引的力。",
        "生僻字：龘靐齉爩 emoji 😀🚀 ünïcödé — ‘quotes’",
        "  leading spaces\tand\ttabs\n\nnew lines  ",
        "<|im_start|>user\n你好<|im_end|>\n<think>\n\n</think>\n\n",
    ):
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text
        assert all(0 <= i < len(tok) for i in ids)


def test_yes_no_single_tokens(models: dict[str, Path]) -> None:
    tok = _tok(models["qwen3-reranker"])
    for word in ("yes", "no"):
        ids = tok(word, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1
        assert tok.convert_tokens_to_ids(word) == ids[0]
    assert tok.convert_tokens_to_ids("yes") != tok.convert_tokens_to_ids("no")


def test_append_eos(models: dict[str, Path]) -> None:
    emb = _tok(models["qwen3-embedding"])
    plain = _tok(models["qwen3-reranker"])
    eot = emb.convert_tokens_to_ids(EOT)
    assert plain.convert_tokens_to_ids(EOT) == eot
    text = "What is the capital of China?"
    e_ids = emb(text)["input_ids"]
    p_ids = plain(text)["input_ids"]
    assert e_ids == [*p_ids, eot]
    assert plain(text, add_special_tokens=False)["input_ids"] == p_ids
    assert emb(text, add_special_tokens=False)["input_ids"] == p_ids  # bypassing the post-processor
    batch = emb(["a", "a longer text"], padding=True)["input_ids"]
    assert batch[0][-1] == eot and batch[1][-1] == eot  # left padding keeps eos last
    tj = json.loads((models["qwen3-embedding"] / "tokenizer.json").read_text())
    assert tj["post_processor"]["type"] == "TemplateProcessing"
    assert json.loads((models["qwen3-reranker"] / "tokenizer.json").read_text())["post_processor"] is None


def test_chat_template_exact(models: dict[str, Path]) -> None:
    tok = _tok(models["qwen2-chat"])
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    )
    rendered = tok.apply_chat_template(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"},
        ],
        tokenize=False,
        add_generation_prompt=False,
    )
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
    )
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert ids[0] == tok.convert_tokens_to_ids(IM_START)


# ------------------------------------------------------------------------------------ models


def test_chat_model_loads_and_generates(models: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    path = models["qwen2-chat"]
    tok = _tok(path)
    tensors = _tensors(path)
    assert all(t.dtype == torch.float16 for t in tensors.values())
    assert "lm_head.weight" in tensors  # TINY_QWEN2 is untied, like Qwen2.5-7B
    assert "model.layers.0.self_attn.q_proj.bias" in tensors
    gen = json.loads((path / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(EOT)]
    assert gen["pad_token_id"] == tok.convert_tokens_to_ids(EOT)
    assert (gen["do_sample"], gen["temperature"], gen["top_p"], gen["top_k"], gen["repetition_penalty"]) == (
        True,
        0.7,
        0.8,
        20,
        1.05,
    )

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype="auto")
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.dtype == torch.float16
    model = model.float()
    enc = tok(["Hello world", "中国的首都是北京"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (2, enc["input_ids"].shape[1], TINY_QWEN2.vocab_size)
    assert torch.isfinite(logits).all()
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 1 and prompt["input_ids"].shape[1] < out.shape[1] <= prompt["input_ids"].shape[1] + 4
    tok.decode(out[0], skip_special_tokens=True)


def test_embedding_model_loads(models: dict[str, Path]) -> None:
    from transformers import AutoModel

    path = models["qwen3-embedding"]
    tensors = _tensors(path)
    assert not any("lm_head" in k for k in tensors)
    assert "embed_tokens.weight" in tensors  # base-model keys, no "model." prefix
    tok = _tok(path)
    model = AutoModel.from_pretrained(str(path), dtype=torch.float32)
    assert type(model).__name__ == "Qwen3Model"
    assert model.config.head_dim == TINY_QWEN3.head_dim
    enc = tok(["What is the capital of China?", "重力"], return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    assert hidden.shape == (2, enc["input_ids"].shape[1], TINY_QWEN3.hidden_size)
    assert torch.isfinite(hidden).all()
    pooled = torch.nn.functional.normalize(hidden[:, -1], dim=-1)
    assert float(pooled[0] @ pooled[1]) < 0.999  # different inputs, different vectors


def test_reranker_scores_vary(models: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    path = models["qwen3-reranker"]
    tok = _tok(path)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    pairs = [
        ("What is the capital of France?", "Paris is the capital and largest city of France."),
        ("What is the capital of France?", "Bananas are yellow and rich in potassium."),
        ("How do airplanes fly?", "Wings generate lift as air flows over them."),
        ("谁发明了电话？", "贝尔发明了电话。"),
        ("谁发明了电话？", "今天下雨了，我们待在家里。"),
        ("best pizza in town", "The museum opens at nine in the morning."),
    ]
    texts = [render(DEFAULT_INSTRUCTION, q, d) for q, d in pairs]
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**enc).logits[:, -1]
    assert logits.shape == (len(pairs), TINY_QWEN3.vocab_size) and torch.isfinite(logits).all()
    scores = torch.sigmoid(logits[:, yes] - logits[:, no])
    assert float(scores.max() - scores.min()) > 0.1, scores
    assert len({round(float(s), 3) for s in scores}) == len(pairs)  # orderings are distinguishable


# ------------------------------------------------------------------------------------ AWQ


def test_awq_checkpoint_layout_and_dequant(models: dict[str, Path]) -> None:
    """The demo checkpoint's layout, and the loader's unpacking == autoawq's for it."""
    _import_awq()
    from awq.utils.packing_utils import dequantize_gemm

    from chat_qwen_awq.loader import dequantize

    path = models["qwen2-awq"]
    cfg = json.loads((path / "config.json").read_text())
    group = awq_group_size(TINY_QWEN2)
    assert group == 32
    assert cfg["quantization_config"] == {
        "quant_method": "awq",
        "bits": 4,
        "group_size": group,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": None,
    }
    q = _tensors(path)
    ref = _tensors(models["qwen2-chat"])  # same seed -> same fp16 weights
    for name in (
        "model.embed_tokens.weight",
        "lm_head.weight",
        "model.norm.weight",
        "model.layers.1.input_layernorm.weight",
        "model.layers.0.self_attn.k_proj.bias",
    ):
        assert q[name].dtype == torch.float16 and torch.equal(q[name], ref[name])
    n_linear = 0
    for name, w in ref.items():
        if not (name.endswith("_proj.weight") and ".layers." in name):
            continue
        n_linear += 1
        prefix = name[: -len(".weight")]
        assert prefix + ".weight" not in q
        qweight, qzeros, scales = q[prefix + ".qweight"], q[prefix + ".qzeros"], q[prefix + ".scales"]
        out_f, in_f = w.shape
        assert qweight.dtype == torch.int32 and qweight.shape == (in_f, out_f // 8)
        assert qzeros.dtype == torch.int32 and qzeros.shape == (in_f // group, out_f // 8)
        assert scales.dtype == torch.float16 and scales.shape == (in_f // group, out_f)
        mine = dequantize(qweight, qzeros, scales, group, torch.float16)
        theirs = dequantize_gemm(qweight, qzeros, scales, 4, group)
        assert mine.shape == (in_f, out_f) and mine.dtype == torch.float16
        assert torch.equal(mine, theirs.to(mine.dtype)), name
        # 4-bit error bound per group: |W - Wq| <= scale/2 (+ fp16 rounding)
        err = (mine.float() - w.float().t()).abs()
        bound = scales.float().repeat_interleave(group, dim=0) / 2
        tol = bound * 1.001 + w.float().t().abs() * 2**-10 + 1e-6
        assert bool((err <= tol).all()), (name, float((err - bound).max()))
        assert float(err.max()) > 0  # really quantised
    assert n_linear == 7 * TINY_QWEN2.num_hidden_layers


def test_awq_pack_roundtrip_matches_autoawq_from_linear() -> None:
    """Our packing == autoawq's own WQLinear_GEMM.from_linear for the same scales/zeros."""
    _import_awq()
    from awq.modules.linear.gemm import WQLinear_GEMM

    from chat_qwen_awq.loader import quantize, unpack_awq

    gen = torch.Generator().manual_seed(1)
    # NB: autoawq's from_linear packer needs out_features % 32 == 0 (its buffer is sized
    # out // 32 * 4), although WQLinear_GEMM itself only needs out_features % 8 == 0.
    lin = torch.nn.Linear(64, 96, bias=True)
    with torch.no_grad():
        lin.weight.copy_((torch.randn(96, 64, generator=gen) * 0.02).half().float())
    qweight, qzeros, pscales = quantize(lin.weight, 32)
    intweight, zeros, scales = unpack_awq(qweight).t(), unpack_awq(qzeros).t(), pscales.t()
    fake = torch.nn.Linear(64, 96, bias=True)
    with torch.no_grad():  # autoawq packs the pseudo-quantised weight
        fake.weight.copy_((intweight - zeros.repeat_interleave(32, 1)) * scales.float().repeat_interleave(32, 1))
        fake.bias.copy_(lin.bias)
    ref = WQLinear_GEMM.from_linear(fake, 4, 32, scales=scales.t().contiguous().float(), zeros=zeros.t().contiguous())
    assert torch.equal(ref.qweight, qweight)
    assert torch.equal(ref.qzeros, qzeros)
    assert torch.equal(ref.scales, pscales)


@pytest.mark.filterwarnings("ignore:Using naive:UserWarning")
def test_awq_wqlinear_forward_cpu(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _import_awq()
    import awq.modules.linear.gemm as gemm

    # triton imports fine on a CPU-only box, so autoawq would pick its (GPU-only) triton kernel:
    # force the pure-torch dequantise-and-matmul fallback.
    monkeypatch.setattr(gemm, "TRITON_AVAILABLE", False)
    monkeypatch.setattr(gemm, "awq_ext", None)
    from chat_qwen_awq.loader import dequantize

    group = awq_group_size(TINY_QWEN2)
    q = _tensors(models["qwen2-awq"])
    ref = _tensors(models["qwen2-chat"])
    gen = torch.Generator().manual_seed(0)
    for prefix, has_bias in (("model.layers.0.self_attn.q_proj", True), ("model.layers.1.mlp.down_proj", False)):
        w = ref[prefix + ".weight"]
        out_f, in_f = w.shape
        layer = gemm.WQLinear_GEMM(4, group, in_f, out_f, has_bias, "cpu")
        layer.qweight.copy_(q[prefix + ".qweight"])
        layer.qzeros.copy_(q[prefix + ".qzeros"])
        layer.scales.copy_(q[prefix + ".scales"])
        bias = q[prefix + ".bias"] if has_bias else None
        if has_bias:
            layer.bias.copy_(bias)
        x = torch.randn(3, 5, in_f, generator=gen).half()
        y = layer(x)
        assert y.shape == (3, 5, out_f) and y.dtype == torch.float16
        b = bias.float() if has_bias else 0.0
        exact = (
            x.float()
            @ dequantize(q[prefix + ".qweight"], q[prefix + ".qzeros"], q[prefix + ".scales"], group, torch.float32)
            + b
        )
        torch.testing.assert_close(y.float(), exact, atol=2e-3, rtol=2e-2)
        full = x.float() @ w.float().t() + b
        rel = float((y.float() - full).norm() / full.norm())
        assert rel < 0.2, rel  # 4-bit quantisation noise only


def test_awq_same_seed_same_fp16_model(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    build_qwen2_chat(a)
    build_qwen2_chat(b)
    build_qwen2_chat(c, seed=1)
    ta, tb, tc = _tensors(a), _tensors(b), _tensors(c)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert not torch.equal(ta["model.embed_tokens.weight"], tc["model.embed_tokens.weight"])


# ------------------------------------------------------------------------------------ cache


def test_cache_reuses_folder(cache_root: Path, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    path = models["qwen3-embedding"]
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    again = TINY_EMBED.folder(cache_root)
    assert time.perf_counter() - t0 < 0.05
    assert again == path and (path / "model.safetensors").stat().st_mtime_ns == mtime
    assert not [p for p in cache_root.iterdir() if p.name.startswith(".")]  # no temp dirs left
    assert len({p.parent for p in models.values()}) == 1 and len(set(models.values())) == len(DEMOS)
    # key covers seed and shape
    assert TINY_EMBED.with_shape(TINY_EMBED.shape, seed=1).folder(cache_root) != path
    # default root from the environment
    monkeypatch.setenv("PLUGHOST_CACHE_DIR", str(cache_root))
    assert default_cache_root() == cache_root
    assert TINY_EMBED.folder() == path


def test_cache_key_is_versioned(tmp_path: Path) -> None:
    """Folders of the old tiny-model factory (and of other versions) are never reused."""
    import dataclasses

    key = json.loads((TINY_EMBED.folder(tmp_path) / "demo_model.json").read_text())
    assert key["cache_version"] >= 2 and key["builder"] == "embed_qwen3.demo.build" and key["version"] == 1
    bumped = dataclasses.replace(TINY_EMBED, version=2)
    calls: list[Path] = []
    bumped = dataclasses.replace(bumped, build=lambda dest, shape, seed: calls.append(dest))
    assert bumped.folder(tmp_path) != TINY_EMBED.folder(tmp_path) and len(calls) == 1


def test_cache_lost_race_keeps_winner(tmp_path: Path) -> None:
    """If another process renames its build into place first, ours is discarded quietly."""
    root = tmp_path / "root"
    target: dict[str, Path] = {}

    def probe(dest: Path) -> None:
        (dest / "model").write_text("probe")

    target["final"] = cached_build("m", probe, {"k": 1}, tmp_path / "probe")

    def racing_build(dest: Path) -> None:
        (dest / "model").write_text("ours")
        winner = root / target["final"].name
        winner.mkdir()
        (winner / "winner").write_text("1")

    got = cached_build("m", racing_build, {"k": 1}, root)
    assert got == root / target["final"].name and (got / "winner").exists() and not (got / "model").exists()
    assert [p.name for p in root.iterdir()] == [got.name]


# ------------------------------------------------------------------------------------ real shapes


def _count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() dedups tied weights


def test_real_shape_configs_on_meta() -> None:
    from transformers import Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3Model

    with torch.device("meta"):
        rr = Qwen3ForCausalLM(qwen3_config(QWEN3_0_6B_SHAPE))
        emb = Qwen3Model(qwen3_config(QWEN3_0_6B_SHAPE))
        small = Qwen2ForCausalLM(qwen2_config(QWEN2_5_0_5B_SHAPE))
        big = Qwen2ForCausalLM(qwen2_config(QWEN2_5_7B_SHAPE))
    assert all(p.device.type == "meta" for p in big.parameters())
    assert 0.59e9 < _count_params(rr) < 0.60e9  # Qwen3-0.6B: 596M
    assert _count_params(emb) == _count_params(rr)  # tied lm_head adds nothing
    assert 0.49e9 < _count_params(small) < 0.50e9  # Qwen2.5-0.5B: 494M
    assert 7.6e9 < _count_params(big) < 7.7e9  # Qwen2.5-7B: 7.62B
    cfg = qwen3_config(QWEN3_0_6B_SHAPE)
    assert (cfg.head_dim, cfg.num_key_value_heads, cfg.vocab_size, cfg.tie_word_embeddings) == (128, 8, 151669, True)
    assert awq_group_size(QWEN2_5_7B_SHAPE) == 128
