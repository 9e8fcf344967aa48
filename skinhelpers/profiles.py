"""Run profiles for ``run_all.sh``: one dictionary of notebook parameters per profile.

``smoke``: seconds per notebook (CI); ``cpu``: the real HAM10000 in about an hour on 2
cores; ``gpu``: a GPU box. A notebook receives only the parameters its ``parameters``
cell declares; anything given on the command line overrides the profile.
"""
from __future__ import annotations

PROFILES: dict[str, dict] = {
    "smoke": {
        "image_size": 64,
        "max_images": 600,
        "workers": 2,
    },
    "cpu": {
        "image_size": 128,
        "max_images": 0,  # 0: all images
        "workers": 2,
    },
    "gpu": {
        "image_size": 224,
        "max_images": 0,
        "workers": 8,
    },
}


def resolve(profile: str, overrides: dict | None = None) -> dict:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile '{profile}'; choose one of {sorted(PROFILES)}")
    return {**PROFILES[profile], "profile": profile, **(overrides or {})}
