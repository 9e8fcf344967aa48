"""A local demo page: upload a dermoscopy image, see what the model makes of it.

    python -m skinhelpers demo --checkpoint runs/x/checkpoints/best_ema.pt [--port 7860]

serves a Gradio page on http://127.0.0.1:PORT (this machine only; Gradio's analytics and
version check are off, fonts are local, nothing is sent anywhere). For one uploaded image
it shows the class probabilities, the verdict of the operating point the user chooses in
words with the sensitivity and specificity it had on validation and test (when the run
folder holds notebook 08's ``metrics.json`` for this checkpoint: the melanoma thresholds
chosen there for 95% and 90% specificity and for 95% and 90% sensitivity, the one to
screen with, and the malignant-vs-benign ones), the Grad-CAM of the predicted class over
the image the network saw, and the preprocessing used.

The probabilities are under the training data's class mix by default, or under equal
priors, or under a melanoma prevalence the user gives (a clinic's rate; the other classes
keep the data's proportions), as ``python -m skinhelpers predict --prior`` gives them
with the same checkpoint and test-time views (:mod:`skinhelpers.evaluate.priors`). The
predicted class is the balanced decision whatever the mix, and a threshold always applies
to the balanced score it was chosen on. A file that is not a readable image gets a clear
message.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# before gradio is imported anywhere: no usage statistics, no version check, no telemetry
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from skinhelpers.data.imaging import ImageReadError, load_for_model, read_rgb  # noqa: E402
from skinhelpers.device import PRECISIONS, inference_dtype, precision_name  # noqa: E402
from skinhelpers.evaluate import ood, priors  # noqa: E402
from skinhelpers.evaluate.explain import cams_for_images, overlay  # noqa: E402
from skinhelpers.evaluate.tta import prepare_model  # noqa: E402
from skinhelpers.model.checkpoints import (
    CheckpointError,
    model_from_checkpoint,  # noqa: E402
)
from skinhelpers.model.inference import predict_batch, resolve_views  # noqa: E402
from skinhelpers.share.export import operating_point_choices, run_thresholds  # noqa: E402
from skinhelpers.share.licences import data_licence  # noqa: E402

HOST = "127.0.0.1"
#: the page's choices of class mix for the probabilities
PRIOR_CHOICES = {
    "the training data's class mix": "data",
    "equal priors (every class equally likely)": "equal",
    "a melanoma prevalence I give": "prevalence",
}
#: the page's extra choice when ``--prior`` gave a mix it has no button for
STARTED_CHOICE = "the class mix given on the command line"
DISCLAIMER = (
    "**Research and teaching only. Not a diagnostic device:** do not use it to "
    "decide anything about a patient."
)

log = logging.getLogger(__name__)


class DemoModel:
    """A checkpoint ready for one image at a time: probabilities, verdict, Grad-CAM."""

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        tta=None,
        operating_point: int = 0,
        precision: str = "auto",
        prior=priors.DEFAULT_PRIOR,
    ):
        model, self.info = model_from_checkpoint(checkpoint, "cpu")
        self.net = prepare_model(model, channels_last=True)  # as predict does (Grad-CAM's)
        # with the checkpoint's out-of-distribution guard, as predict scores it
        self.guard = ood.guard_of(self.info)
        self.model = ood.guarded(self.net, self.info)
        # as predict does: bfloat16 autocast on a CPU with native bfloat16 ("auto"), float32
        # with a guard (its threshold holds for float32 features)
        self.amp_dtype = inference_dtype("cpu", ood.guarded_precision(self.info, precision))
        self.precision = precision_name(self.amp_dtype)
        self.classes = list(self.info["classes"])
        self.shift = priors.shift_for(self.info, prior)
        self.thresholds = run_thresholds(checkpoint, self.classes)
        # the views the thresholds were chosen with, unless told otherwise
        default = self.thresholds["tta_views"] if self.thresholds else 1
        self.views = resolve_views(default if tta is None else tta)
        self.choices = operating_point_choices(self.thresholds)
        if self.choices and not 0 <= operating_point < len(self.choices):
            raise ValueError(
                f"--operating-point {operating_point}: this run has {len(self.choices)} "
                f"(0..{len(self.choices) - 1}: "
                + "; ".join(f"{i} {c['label']}" for i, c in enumerate(self.choices))
                + ")"
            )
        self.op_index = operating_point
        self.checkpoint = Path(checkpoint)
        mel = (self.thresholds or {}).get("class")
        self.melanoma = mel if mel in self.classes else None

    @property
    def op(self) -> dict | None:
        """The operating point served by default (``--operating-point``)."""
        return self.choices[self.op_index]["op"] if self.choices else None

    def image(self, path: str | os.PathLike) -> np.ndarray:
        """The uint8 RGB image the network sees (read, preprocessed, resized)."""
        i = self.info
        return load_for_model(path, i["image_size"], i["preprocess"], i["resize_mode"])

    def scores(self, img: np.ndarray) -> tuple[np.ndarray, float | None]:
        """The balanced scores (softmax of the raw logits, averaged over the views: what the
        decision and the thresholds use) and the out-of-distribution score (None without a
        guard)."""
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
        p, _, o = predict_batch(
            self.model,
            x,
            self.info["mean"],
            self.info["std"],
            self.views,
            amp_dtype=self.amp_dtype,
            with_ood=True,
        )
        return p[0].numpy(), (None if o is None else float(o[0]))

    def balanced_probabilities(self, img: np.ndarray) -> np.ndarray:
        """The balanced scores alone (see :meth:`scores`)."""
        return self.scores(img)[0]

    def refusal(self, ood_score: float | None) -> str | None:
        """What the page says instead of a verdict for an image the guard flags (None: the
        image passes, or the model carries no guard)."""
        if ood_score is None or self.guard is None or self.guard.in_distribution(ood_score):
            return None
        return (
            "### Not analysed: this image does not look like the images the model was "
            "trained on\n\n"
            f"Its out-of-distribution score is **{ood_score:.4g}**, above the threshold "
            f"{self.guard.threshold:.4g} that {self.guard.pass_rate:.0%} of the validation "
            f"images pass ({self.guard.method} of the network's features). The model would "
            "still name a class, but for an image unlike its training data (not a "
            "dermoscopy image, another camera or population) that class means nothing, so "
            "no class and no verdict are given.\n\n" + DISCLAIMER
        )

    def shift_for(self, prior_choice: str | None = None, prevalence=None) -> priors.PriorShift:
        """The class mix the page asks for: a :data:`PRIOR_CHOICES` label (or its value),
        with ``prevalence`` (a percentage) for the melanoma prevalence; None: the mix the
        page was started with."""
        kind = PRIOR_CHOICES.get(prior_choice, prior_choice)
        if kind in (None, "", STARTED_CHOICE):
            return self.shift
        if kind == "prevalence":
            if self.melanoma is None:
                raise ValueError("this model's run names no melanoma class to set the rate of")
            if prevalence is None or not 0 < float(prevalence) < 100:
                raise ValueError(
                    f"a melanoma prevalence in percent, above 0 and below 100 (got {prevalence})"
                )
            kind = {self.melanoma: float(prevalence) / 100}
        return priors.shift_for(self.info, kind)

    def probabilities(self, img: np.ndarray, shift: priors.PriorShift | None = None) -> np.ndarray:
        """The probabilities shown: under the class mix of ``shift`` (default: the page's)."""
        return (shift or self.shift).apply(self.balanced_probabilities(img)[None])[0]

    def cam_overlay(self, img: np.ndarray, target: int) -> np.ndarray:
        cam = cams_for_images(
            self.net, img[None], self.info["mean"], self.info["std"], targets=[target]
        )[0]
        return overlay(img, cam)

    def choice_index(self, label) -> int:
        """The operating point named by its page label (or its index); the default one."""
        if label is None or label == "":
            return self.op_index
        if isinstance(label, int):
            return label
        labels = [c["label"] for c in self.choices]
        if label not in labels:
            raise ValueError(f"no operating point '{label}': {labels}")
        return labels.index(label)

    def verdict(self, balanced: np.ndarray, choice=None) -> str:
        """The chosen operating point's answer for these balanced scores, in words."""
        if not self.choices:
            return (
                "No operating point: the run folder of this checkpoint holds no thresholds "
                "from notebook 08 for it, so only the probabilities are shown."
            )
        c = self.choices[self.choice_index(choice)]
        op, name = c["op"], c["name"]
        p = float(np.asarray(balanced)[c["class_indices"]].sum())
        val, test = op["validation"], op.get("test", {})
        above = p >= op["threshold"]
        head = (
            f"### {'Flagged: suspicious of' if above else 'Not flagged for'} {name}\n\n"
            f"Balanced score for {name} = **{p:.3f}**, {'at or above' if above else 'below'} "
            f"the threshold {op['threshold']:.3f}."
        )
        how = (
            f"This threshold was chosen on the validation split for {op['target']} "
            f"≥ {op['target_value']:.0%}. On validation it found "
            f"**{val['sensitivity']:.0%}** of the {name} cases (sensitivity) and left "
            f"**{val['specificity']:.0%}** of the other lesions unflagged (specificity)"
        )
        if test.get("sensitivity") is not None:
            how += (
                f"; on the test split: sensitivity {test['sensitivity']:.0%}, "
                f"specificity {test['specificity']:.0%}"
            )
        why = (
            "The threshold applies to the balanced score (every class weighed equally), "
            "the score it was chosen on, not to the probabilities shown above."
        )
        return f"{head}\n\n{how}.\n\n{why}\n\n{DISCLAIMER}"

    def preprocessing(self, path: str, img: np.ndarray, shift=None, ood_score=None) -> str:
        h, w = read_rgb(path).shape[:2]
        i = self.info
        guard = (
            "- out-of-distribution guard: none in this checkpoint (every image gets a class)\n"
            if self.guard is None
            else f"- out-of-distribution score: {ood_score:.4g} (threshold "
            f"{self.guard.threshold:.4g}, {self.guard.method})\n"
        )
        return (
            guard + f"- uploaded image: {w} x {h} px\n"
            f"- preprocessing: `{i['preprocess']}`, then resize `{i['resize_mode']}` to "
            f"{img.shape[1]} x {img.shape[0]} px\n"
            f"- normalisation: mean {[round(m, 4) for m in i['mean']]}, "
            f"std {[round(s, 4) for s in i['std']]}\n"
            f"- test-time views averaged: {', '.join(self.views)}; "
            f"precision {self.precision}\n"
            f"- {(shift or self.shift).describe()}\n"
            f"- model: {i['arch']}, epoch {i['epoch']}, trained on `{i['dataset']}` "
            f"(`{self.checkpoint.name}`)\n"
            f"- data licence: {data_licence(i['dataset'])}"
        )

    def analyse(self, path: str | None, choice=None, prior_choice=None, prevalence=None):
        """Everything the page shows for one uploaded file, with the operating point
        ``choice`` (its label; None: the default) and the class mix ``prior_choice`` (a
        :data:`PRIOR_CHOICES` label; with ``prevalence`` in percent). Raises ``gr.Error``
        with a clear message for a missing or unreadable file or a bad choice."""
        import gradio as gr

        if not path:
            raise gr.Error("Upload a dermoscopy image (JPEG or PNG) first.")
        try:
            shift = self.shift_for(prior_choice, prevalence)
        except ValueError as e:
            raise gr.Error(str(e)) from e
        try:
            img = self.image(path)
        except (ImageReadError, OSError, ValueError) as e:
            why = type(e.__cause__ or e).__name__
            raise gr.Error(
                f"'{Path(path).name}' is not an image this demo can read ({why}). "
                "Upload a dermoscopy image: JPEG, PNG, BMP or TIFF."
            ) from e
        balanced, ood_score = self.scores(img)
        refused = self.refusal(ood_score)
        if refused is not None:
            return {}, refused, img, self.preprocessing(path, img, shift, ood_score)
        probs = shift.apply(balanced[None])[0]
        decision = int(priors.balanced_decision(balanced[None])[0])
        label = {c: float(p) for c, p in zip(self.classes, probs)}
        said = (
            f"**Predicted class: {self.classes[decision]}** (the balanced decision, every "
            "class weighed equally: the rule the model was selected for). The probabilities "
            f"are {shift.describe().removeprefix('probabilities ')}, so the most probable "
            "class under that mix can differ.\n\n"
        )
        return (
            label,
            said + self.verdict(balanced, choice),
            self.cam_overlay(img, decision),
            self.preprocessing(path, img, shift, ood_score),
        )


def build_demo(
    checkpoint: str | os.PathLike,
    tta=None,
    operating_point: int = 0,
    precision: str = "auto",
    prior=priors.DEFAULT_PRIOR,
):
    """The Gradio Blocks app for ``checkpoint`` (launch it with :func:`serve`)."""
    import gradio as gr

    dm = DemoModel(
        checkpoint, tta=tta, operating_point=operating_point, precision=precision, prior=prior
    )
    synthetic = dm.info["dataset"] == "demo"
    by_value = {v: k for k, v in PRIOR_CHOICES.items()}
    prior_labels = list(PRIOR_CHOICES) if dm.melanoma else list(PRIOR_CHOICES)[:2]
    start = by_value.get(dm.shift.name)
    if start is None:  # a prevalence or a full class mix from --prior
        prior_labels.append(STARTED_CHOICE)
        start = STARTED_CHOICE
    mel_rate = 100 * float(dm.shift.target[dm.classes.index(dm.melanoma)]) if dm.melanoma else None
    with gr.Blocks(title="skinlesion-lab demo", analytics_enabled=False) as app:
        gr.Markdown(
            "# skinlesion-lab: try the model\n\n"
            + DISCLAIMER
            + ("\n\n**This model was trained on SYNTHETIC images.**" if synthetic else "")
        )
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="dermoscopy image (JPEG / PNG)", type="filepath")
                op_choice = gr.Dropdown(
                    [c["label"] for c in dm.choices],
                    value=dm.choices[dm.op_index]["label"] if dm.choices else None,
                    label="operating point (thresholds chosen on validation in notebook 08; "
                    "to screen, take the 95% sensitivity one)",
                    visible=bool(dm.choices),
                )
                prior_choice = gr.Radio(prior_labels, value=start, label="probabilities under")
                prevalence = gr.Number(
                    value=round(mel_rate, 2) if mel_rate is not None else None,
                    label=f"{dm.melanoma or 'melanoma'} prevalence (%) where the model is "
                    "used (with 'a melanoma prevalence I give'; the other classes keep the "
                    "training data's proportions)",
                    visible=dm.melanoma is not None,
                )
                button = gr.Button("Classify", variant="primary")
                preprocessing = gr.Markdown(label="preprocessing")
            with gr.Column():
                probs = gr.Label(num_top_classes=len(dm.classes), label="class probabilities")
                verdict = gr.Markdown()
                cam = gr.Image(
                    label="Grad-CAM of the predicted class (the image as the network saw it)",
                    type="numpy",
                    interactive=False,
                )
        inputs = [upload, op_choice, prior_choice, prevalence]
        outputs = [probs, verdict, cam, preprocessing]
        button.click(dm.analyse, inputs=inputs, outputs=outputs, api_name="classify")
        upload.upload(dm.analyse, inputs=inputs, outputs=outputs, api_name=False)
    app.demo_model = dm
    return app


def serve(
    checkpoint: str | os.PathLike,
    port: int = 7860,
    block: bool = True,
    tta=None,
    operating_point: int = 0,
    precision: str = "auto",
    prior=priors.DEFAULT_PRIOR,
):
    """Serve the demo on 127.0.0.1:``port`` (never shared, no analytics); return the app.
    ``block=False`` returns at once with the server running (tests)."""
    import gradio as gr

    app = build_demo(
        checkpoint, tta=tta, operating_point=operating_point, precision=precision, prior=prior
    )
    app.launch(
        server_name=HOST,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        show_error=True,
        ssr_mode=False,
        quiet=True,
        theme=gr.themes.Default(),
        footer_links=[],
    )
    return app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m skinhelpers demo", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--checkpoint", required=True, help="a .pt file written by notebook 07")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument(
        "--tta",
        default=None,
        help="test-time views (default: those the run's thresholds were chosen with, else 1)",
    )
    ap.add_argument(
        "--operating-point",
        type=int,
        default=0,
        help="the operating point the page starts with (0 = the first: melanoma at 95%% "
        "specificity; the page lists them all, the 95%% sensitivity one to screen with)",
    )
    ap.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto (bfloat16 on a CPU with native bfloat16, as predict) | float32 | bfloat16",
    )
    ap.add_argument(
        "--prior",
        default=priors.DEFAULT_PRIOR,
        help=priors.PRIOR_HELP + " (the page can change it)",
    )
    a = ap.parse_args(argv)
    print(f"serving on http://{HOST}:{a.port} (Ctrl-C stops it)", flush=True)
    try:
        serve(
            a.checkpoint,
            a.port,
            tta=a.tta,
            operating_point=a.operating_point,
            precision=a.precision,
            prior=a.prior,
        )
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


__all__ = ["HOST", "PRIOR_CHOICES", "DemoModel", "build_demo", "serve", "main"]
