"""A local demo page: upload a dermoscopy image, see what the model makes of it.

    python -m skinhelpers demo --checkpoint runs/x/checkpoints/best_ema.pt [--port 7860]

serves a Gradio page on http://127.0.0.1:PORT (this machine only; Gradio's analytics and
version check are off, fonts are local, nothing is sent anywhere). For one uploaded image
it shows the class probabilities, the melanoma operating point's verdict in words with
the sensitivity and specificity it had on validation (when the run folder holds notebook
08's ``metrics.json`` for this checkpoint), the Grad-CAM of the predicted class over the
image the network saw, and the preprocessing used. The probabilities are those of
``python -m skinhelpers predict`` with the same checkpoint and test-time views. A file
that is not a readable image gets a clear message.
"""

from __future__ import annotations

import argparse
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
from skinhelpers.evaluate.explain import cams_for_images, overlay  # noqa: E402
from skinhelpers.evaluate.tta import prepare_model  # noqa: E402
from skinhelpers.model.checkpoints import (
    CheckpointError,
    model_from_checkpoint,  # noqa: E402
)
from skinhelpers.model.inference import predict_batch, resolve_views  # noqa: E402
from skinhelpers.share.export import run_thresholds  # noqa: E402
from skinhelpers.share.licences import data_licence  # noqa: E402

HOST = "127.0.0.1"
DISCLAIMER = (
    "**Research and teaching only. Not a diagnostic device:** do not use it to "
    "decide anything about a patient."
)


class DemoModel:
    """A checkpoint ready for one image at a time: probabilities, verdict, Grad-CAM."""

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        tta=None,
        operating_point: int = 0,
        precision: str = "auto",
    ):
        model, self.info = model_from_checkpoint(checkpoint, "cpu")
        self.model = prepare_model(model, channels_last=True)  # as predict does
        # as predict does: bfloat16 autocast on a CPU with native bfloat16 ("auto")
        self.amp_dtype = inference_dtype("cpu", precision)
        self.precision = precision_name(self.amp_dtype)
        self.classes = list(self.info["classes"])
        self.thresholds = run_thresholds(checkpoint, self.classes)
        # the views the thresholds were chosen with, unless told otherwise
        default = self.thresholds["tta_views"] if self.thresholds else 1
        self.views = resolve_views(default if tta is None else tta)
        ops = (self.thresholds or {}).get("operating_points") or []
        if ops and not 0 <= operating_point < len(ops):
            raise ValueError(
                f"--operating-point {operating_point}: this run has {len(ops)} (0..{len(ops) - 1})"
            )
        self.op = ops[operating_point] if ops else None
        self.checkpoint = Path(checkpoint)

    def image(self, path: str | os.PathLike) -> np.ndarray:
        """The uint8 RGB image the network sees (read, preprocessed, resized)."""
        i = self.info
        return load_for_model(path, i["image_size"], i["preprocess"], i["resize_mode"])

    def probabilities(self, img: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
        p, _ = predict_batch(
            self.model, x, self.info["mean"], self.info["std"], self.views, amp_dtype=self.amp_dtype
        )
        return p[0].numpy()

    def cam_overlay(self, img: np.ndarray, target: int) -> np.ndarray:
        cam = cams_for_images(
            self.model, img[None], self.info["mean"], self.info["std"], targets=[target]
        )[0]
        return overlay(img, cam)

    def verdict(self, probs: np.ndarray) -> str:
        """The melanoma operating point's answer for these probabilities, in words."""
        if self.op is None:
            return (
                "No melanoma operating point: the run folder of this checkpoint holds "
                "no thresholds from notebook 08 for it, so only the probabilities are "
                "shown."
            )
        t = self.thresholds
        name, p = t["name"], float(probs[t["class_index"]])
        op, val, test = self.op, self.op["validation"], self.op.get("test", {})
        above = p >= op["threshold"]
        head = (
            f"### {'Flagged: suspicious of' if above else 'Not flagged for'} {name}\n\n"
            f"p({name}) = **{p:.3f}**, {'at or above' if above else 'below'} the "
            f"threshold {op['threshold']:.3f}."
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
        return f"{head}\n\n{how}.\n\n{DISCLAIMER}"

    def preprocessing(self, path: str, img: np.ndarray) -> str:
        h, w = read_rgb(path).shape[:2]
        i = self.info
        return (
            f"- uploaded image: {w} x {h} px\n"
            f"- preprocessing: `{i['preprocess']}`, then resize `{i['resize_mode']}` to "
            f"{img.shape[1]} x {img.shape[0]} px\n"
            f"- normalisation: mean {[round(m, 4) for m in i['mean']]}, "
            f"std {[round(s, 4) for s in i['std']]}\n"
            f"- test-time views averaged: {', '.join(self.views)}; "
            f"precision {self.precision}\n"
            f"- model: {i['arch']}, epoch {i['epoch']}, trained on `{i['dataset']}` "
            f"(`{self.checkpoint.name}`)\n"
            f"- data licence: {data_licence(i['dataset'])}"
        )

    def analyse(self, path: str | None):
        """Everything the page shows for one uploaded file (raises ``gr.Error`` with a
        clear message for a missing or unreadable file)."""
        import gradio as gr

        if not path:
            raise gr.Error("Upload a dermoscopy image (JPEG or PNG) first.")
        try:
            img = self.image(path)
        except (ImageReadError, OSError, ValueError) as e:
            why = type(e.__cause__ or e).__name__
            raise gr.Error(
                f"'{Path(path).name}' is not an image this demo can read ({why}). "
                "Upload a dermoscopy image: JPEG, PNG, BMP or TIFF."
            ) from e
        probs = self.probabilities(img)
        label = {c: float(p) for c, p in zip(self.classes, probs)}
        return (
            label,
            self.verdict(probs),
            self.cam_overlay(img, int(probs.argmax())),
            self.preprocessing(path, img),
        )


def build_demo(
    checkpoint: str | os.PathLike, tta=None, operating_point: int = 0, precision: str = "auto"
):
    """The Gradio Blocks app for ``checkpoint`` (launch it with :func:`serve`)."""
    import gradio as gr

    dm = DemoModel(checkpoint, tta=tta, operating_point=operating_point, precision=precision)
    synthetic = dm.info["dataset"] == "demo"
    with gr.Blocks(title="skinlesion-lab demo", analytics_enabled=False) as app:
        gr.Markdown(
            "# skinlesion-lab: try the model\n\n"
            + DISCLAIMER
            + ("\n\n**This model was trained on SYNTHETIC images.**" if synthetic else "")
        )
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="dermoscopy image (JPEG / PNG)", type="filepath")
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
        outputs = [probs, verdict, cam, preprocessing]
        button.click(dm.analyse, inputs=upload, outputs=outputs, api_name="classify")
        upload.upload(dm.analyse, inputs=upload, outputs=outputs, api_name=False)
    app.demo_model = dm
    return app


def serve(
    checkpoint: str | os.PathLike,
    port: int = 7860,
    block: bool = True,
    tta=None,
    operating_point: int = 0,
    precision: str = "auto",
):
    """Serve the demo on 127.0.0.1:``port`` (never shared, no analytics); return the app.
    ``block=False`` returns at once with the server running (tests)."""
    import gradio as gr

    app = build_demo(checkpoint, tta=tta, operating_point=operating_point, precision=precision)
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
        help="which of the run's melanoma operating points (0 = the first)",
    )
    ap.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto (bfloat16 on a CPU with native bfloat16, as predict) | float32 | bfloat16",
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
        )
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


__all__ = ["HOST", "DemoModel", "build_demo", "serve", "main"]
