"""The terms the report uses, explained once (notebook 08's end, ``report/glossary.html``,
linked from the report index and the model card)."""

from __future__ import annotations

import html
import logging

log = logging.getLogger(__name__)

#: term -> explanation, in reading order
GLOSSARY = {
    "balanced accuracy": (
        "The mean of the recalls (sensitivities) of the classes: every class counts the "
        "same however rare. Always saying 'nevus' scores 0.67 accuracy on HAM10000 but 1/7 "
        "= 0.14 balanced accuracy. ISIC 2018 Task 3 ranked by it (as 'balanced multiclass "
        "accuracy')."
    ),
    "sensitivity, specificity": (
        "Sensitivity (recall): the share of melanomas the model flags. Specificity: the "
        "share of other lesions it leaves alone. PPV and NPV, the share of flagged lesions "
        "that are melanomas and of unflagged ones that are not, depend on how common "
        "melanoma is where the model is used."
    ),
    "operating point": (
        "A threshold on the melanoma score, chosen on the validation split for a target "
        "(95% specificity: few needless excisions; 95% sensitivity: few missed melanomas, "
        "for screening), then measured unchanged on test."
    ),
    "ROC-AUC": (
        "Area under the receiver operating characteristic curve: the chance that a random "
        "melanoma gets a higher score than a random other lesion (0.5 is chance, 1 "
        "perfect). It judges the ranking, independent of any threshold. Macro ROC-AUC "
        "averages the one-vs-rest AUC of every class."
    ),
    "macro F1": (
        "The mean over classes of F1, the harmonic mean of precision and recall: it also "
        "punishes false alarms, which balanced accuracy does not."
    ),
    "bootstrap": (
        "A way to get a 95% confidence interval without a formula: draw the test set again "
        "with replacement many times (1,000 by default), recompute the number each time, and take "
        "the middle 95% of the results. Here the draws are of lesions, class by class: a "
        "lesion's images are drawn together, because they are not independent evidence."
    ),
    "Wilson interval": (
        "A confidence interval for a proportion such as a sensitivity (Wilson, 1927). Unlike "
        "the textbook 'p ± 1.96 SE' it stays inside 0-1 and is never of width zero: 7 of 7 "
        "gives 0.65-1. Here it counts lesions, not images (an effective n)."
    ),
    "lesion-grouped split": (
        "Train, validation and test are split by lesion, so no lesion has images on both "
        "sides; otherwise the model would be tested on other photographs of lesions it "
        "trained on. HAM10000 has lesion ids, not patient ids: two lesions of one patient "
        "can still sit in train and test."
    ),
    "StratifiedGroupKFold": (
        "scikit-learn's splitter behind the lesion-grouped split and the K folds: each "
        "group (lesion) goes to one fold only (grouped), and every fold gets about the same "
        "share of each class (stratified)."
    ),
    "EMA": (
        "Exponential moving average of the weights: a running average of the network's "
        "weights over the training steps (decay 0.999: roughly the last thousand steps). "
        "It smooths out the noise of single steps and often generalises a little better; "
        "best_ema and final_ema are such averages."
    ),
    "logit adjustment": (
        "A training loss for imbalanced classes (Menon et al. 2020): log(prior) x tau is "
        "added to the network's scores during training only, so the raw scores learn to "
        "treat the classes as equally likely and their argmax is the balanced decision. "
        "Probabilities under the training data's class mix (what predict, the export and "
        "the demo give) add the prior back: softmax(logits + tau log(prior)) when training "
        "drew images in the data's own mix."
    ),
    "balanced decision": (
        "The predicted class: the class with the highest raw score, every class weighed "
        "equally, the rule the model was selected for (validation balanced accuracy). "
        "Under the data's class mix a nevus may still be the most probable class."
    ),
    "calibration, ECE": (
        "A model is calibrated when its probabilities mean what they say: of the lesions it "
        "gives 80%, 80% are right. The expected calibration error (ECE) is the average gap "
        "between confidence and accuracy over confidence bins, weighted by their size; "
        "the reliability diagram draws it."
    ),
    "temperature scaling": (
        "Dividing the logits by one number T, fitted on validation, to correct over- "
        "(T > 1) or under-confidence (T < 1). It changes no prediction, only confidence."
    ),
    "TTA": (
        "Test-time augmentation: the model sees each image in several flips and rotations "
        "and the probabilities are averaged. It costs one prediction per view."
    ),
    "bfloat16": (
        "A 16-bit floating-point format with float32's range and fewer digits. Inference in "
        "bfloat16 (autocast) is faster on GPUs and recent CPUs and moves single "
        "probabilities slightly; float32 gives the same numbers on every machine."
    ),
    "Grad-CAM": (
        "Gradient-weighted class activation mapping: a heat map of where the last "
        "convolutional feature maps pushed the predicted class, upsampled onto the image. "
        "It shows where the network looked, not why; on a feature map below 4x4 it says "
        "too little to be shown."
    ),
    "histopathology (dx_type)": (
        "How a HAM10000 diagnosis was confirmed: histopathology (a biopsy read under the "
        "microscope), follow-up, expert consensus or confocal microscopy. It is known only "
        "after the lesion was judged, so it is described, never given to the model."
    ),
}


def glossary_markdown() -> str:
    """The glossary as a Markdown definition list."""
    return "\n".join(f"- **{term}**: {text}" for term, text in GLOSSARY.items())


def glossary_html() -> str:
    """The glossary as an HTML definition list (for ``report/glossary.html``)."""
    items = "".join(
        f"<dt id='{html.escape(term.split(',')[0].split(' (')[0].replace(' ', '-'))}'>"
        f"<b>{html.escape(term)}</b></dt><dd>{html.escape(text)}</dd>"
        for term, text in GLOSSARY.items()
    )
    return f"<dl>{items}</dl>"


__all__ = ["GLOSSARY", "glossary_html", "glossary_markdown"]
