"""GET /image_exists from the cluster: images the nodes report (node.status.images), cached briefly."""

import logging
import time

from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.api.schemas import ImageExists, ImageInfo
from kubehands.api.settings import Settings
from kubehands.kube import Kube

log = logging.getLogger(__name__)

TTL_SECONDS = 30.0


def _aliases(ref: str) -> set[str]:
    """The forms a node may report for `ref` (docker.io/library/ prefixes, implicit :latest)."""
    names = {ref}
    if "@" not in ref and ":" not in ref.rsplit("/", 1)[-1]:
        names.add(ref + ":latest")
    for name in list(names):
        first = name.split("/", 1)[0]
        if "/" not in name:
            names.add(f"docker.io/library/{name}")
        elif "." not in first and ":" not in first and first != "localhost":
            names.add(f"docker.io/{name}")
    return names


class ImageCatalog:
    def __init__(self, settings: Settings, kube: Kube) -> None:
        self._settings = settings
        self._kube = kube
        self._images: dict[str, int] = {}
        self._fetched = float("-inf")

    async def _refresh(self) -> None:
        if time.monotonic() - self._fetched < TTL_SECONDS:
            return
        images: dict[str, int] = {}
        try:
            nodes = await self._kube.core.list_node()
        except ApiException as exc:  # e.g. no RBAC on nodes: fall back to configuration
            log.debug("cannot list nodes: %s", exc.status)
        else:
            for node in nodes.items:
                for image in (node.status and node.status.images) or []:
                    for name in image.names or []:
                        images[name] = int(image.size_bytes or 0)
        self._images, self._fetched = images, time.monotonic()

    async def lookup(self, ref: str) -> ImageExists:
        await self._refresh()
        for name in _aliases(ref):
            if name in self._images:
                return ImageExists(exists=True, image=ImageInfo(image_size_bytes=self._images[name]))
        if self._settings.assume_images_exist:
            return ImageExists(exists=True, image=ImageInfo())
        return ImageExists(exists=False)
