"""FROM: a stage's starting state from another stage, an image, or scratch.

ONBUILD triggers never carry over: those of the base (image or stage) were
lowered into this stage's first steps by the frontend, and the image keeps
only the stage's own ONBUILD entries (BuildKit dispatchState.init and
resolveStages in dockerfile2llb/convert.go set ``Config.OnBuild = nil``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from builder.build.state import StageState
from builder.image import configedit as ce
from builder.image.commit import Layer
from builder.image.oci import Descriptor, ImageConfig, Platform
from builder.scripted import base_layers
from frontend.steps import Stage

if TYPE_CHECKING:
    from builder.build.builder import Builder


def start_stage(b: "Builder", stage: Stage) -> StageState:
    if stage.base_stage is not None:
        parent = b.states[stage.base_stage]
        cfg = parent.cfg.copy()
        cfg.config.pop("OnBuild", None)
        return StageState(stage.index, cfg, list(parent.layers), f"stage-{stage.index}")
    if stage.base_image is None:
        plat = Platform.parse(stage.platform) if stage.platform else b.platform
        cfg = ImageConfig(architecture=plat.architecture, os=plat.os, variant=plat.variant,
                          config={"Env": [f"PATH={ce.DEFAULT_PATH}"]})
        return StageState(stage.index, cfg, [], "scratch")
    rec = b.base_image(stage.base_image, stage.platform)
    cfg, layers = base_layers(b.ws, rec)
    cfg.config.pop("OnBuild", None)
    return StageState(stage.index, cfg, [Layer(Descriptor(l.media_type, l.digest, l.size), l.diff_id)
                                         for l in layers], stage.base_image)
