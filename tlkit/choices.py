"""The small tables that command-line choices come from, importing nothing heavy.

``tlkit --help`` and every ``--help`` build their ``click.Choice`` lists from these tables, so
they live apart from the data code that uses them (NumPy, pandas, TensorFlow): reading a
choice costs nothing.

Example:
    >>> list(TOKENIZERS)
    ['kim', 'kim-cased', 'lower']
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tokenizer:
    """One way of cutting text into tokens: regex rewrites, optional lower-casing, split.

    ``rules`` are ``(pattern, replacement)`` pairs in RE2 syntax (what TensorFlow's
    ``tf.strings.regex_replace`` runs), applied in order; the result is split on spaces.

    Example:
        >>> sorted(TOKENIZERS), TOKENIZERS["kim-cased"].lower
        (['kim', 'kim-cased', 'lower'], 'none')
    """

    name: str
    description: str
    rules: tuple[tuple[str, str], ...]
    lower: str  # "none", "ascii" (after the rules, as Kim does) or "unicode" (before them)


# Kim's clean_str, from the preprocessing his paper's code describes: keep letters, digits and
# ( ) , ! ? ' `; split off the clitics 's 've n't 're 'd 'll and the punctuation , ! ( ) ?;
# collapse whitespace; lower-case last (his TREC runs keep the case).
_KIM_RULES = (
    (r"[^A-Za-z0-9(),!?'`]", " "),
    (r"'s", " 's"),
    (r"'ve", " 've"),
    (r"n't", " n't"),
    (r"'re", " 're"),
    (r"'d", " 'd"),
    (r"'ll", " 'll"),
    (r",", " , "),
    (r"!", " ! "),
    (r"\(", " ( "),
    (r"\)", " ) "),
    (r"\?", " ? "),
    (r"\s+", " "),
)

TOKENIZERS: dict[str, Tokenizer] = {
    t.name: t
    for t in (
        Tokenizer("kim", "Kim's clean_str, lower-cased (his default)", _KIM_RULES, "ascii"),
        Tokenizer("kim-cased", "Kim's clean_str keeping case (his TREC setting)", _KIM_RULES,
                  "none"),
        Tokenizer(
            "lower",
            "lower-case words of letters and digits (inner apostrophes kept), no punctuation",
            (
                # \pM keeps combining marks, which Unicode lower-casing can produce.
                (r"[^\pL\pM\pN']+", " "),
                # Apostrophes only count inside a word (don't), not as quotes ('word').
                (r"(?:^| )'+|'+(?: |$)", " "),
                (r"\s+", " "),
            ),
            "unicode",
        ),
    )
}

# `--tta` of evaluate and predict (image runs): the views whose probabilities are averaged
# (tlkit.tasks.image.tta_views makes them).
TTA_LEVELS = {
    "flip": "the image and its horizontal flip (2 views)",
    "flip-crops": ("the image, its horizontal flip, and 5 crops of 90% of its side (the 4 "
                   "corners and the centre) resized back to the input size (7 views)"),
}
# `--conformal-score` of predict and serve: the split-conformal score of prediction sets,
# the default first (tlkit.evaluation.calibration; docs/calibration.md).
CONFORMAL_SCORES = ("aps", "lac")
# `tlkit export --format` and `--quantize`.
EXPORT_FORMATS = ("savedmodel", "tflite", "onnx")
EXPORT_QUANTIZATIONS = ("dynamic",)

# `tlkit serve` defaults: most inputs joined into one model call, and how long the first
# waiting request waits for others to join it.
SERVE_MAX_BATCH = 64
SERVE_MAX_WAIT_MS = 5.0
# Seconds a client has to send its request (line, headers and body) before a 408.
SERVE_READ_TIMEOUT = 30.0

# A recipe's `mixed_precision` and `strategy` (tlkit.devices reads them when it trains).
PRECISIONS = ("off", "auto", "float16", "bfloat16")
STRATEGIES = ("auto", "none", "mirrored", "multiworker")
# A text recipe's `vectors_format` (tlkit.vectors reads these files).
VECTOR_FORMATS = ("word2vec-bin", "word2vec-text", "glove", "fasttext")
