"""What a model looks at: image heatmaps (saliency, SmoothGrad, Grad-CAM) and text n-grams.

Everything returns arrays or pandas tables; ``explain_images`` and ``explain_run`` also draw
overlays from those arrays and save them. No module here imports TensorFlow at load time.
``gradcam`` and ``saliency`` are imported from their modules of the same name
(``from tlkit.explain.gradcam import gradcam``), which a package attribute would shadow.

Example:
    >>> from tlkit.explain import explain_run, top_ngrams
"""

from tlkit.explain.run import explain_images, explain_run, overlay_figure
from tlkit.explain.saliency import score_model, smoothgrad
from tlkit.explain.text import explain_sentences, filter_ngrams, token_saliency, top_ngrams

__all__ = ["explain_images", "explain_run", "explain_sentences", "filter_ngrams",
           "overlay_figure", "score_model", "smoothgrad", "token_saliency", "top_ngrams"]
