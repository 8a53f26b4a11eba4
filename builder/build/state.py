"""The state of one stage while it builds: image config, layers and the
working container (made only when a step needs the filesystem)."""
from __future__ import annotations

from dataclasses import dataclass

from builder.build.cache import chain_of
from builder.image.commit import Layer
from builder.image.oci import ImageConfig
from builder.workspace.container import ContainerState


@dataclass
class StageState:
    index: int  # -1 for an image used by --from
    cfg: ImageConfig
    layers: list[Layer]
    image: str  # what the working container is over, for its name
    container: ContainerState | None = None

    @property
    def chain(self) -> str:
        """The identity of the stage's filesystem now: platform and layer diff_ids (see cache.chain_of)."""
        plat = f"{self.cfg.os}/{self.cfg.architecture}/{self.cfg.variant}"
        return chain_of(plat, [l.diff_id for l in self.layers])


@dataclass
class Streamed:
    """What a filesystem step's run returns when it made its layer without changing the stage's
    snapshot (a COPY written straight from its sources): the layer, None when nothing changed."""

    layer: Layer | None
