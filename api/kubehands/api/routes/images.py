"""GET /registry_prefix and GET /image_exists (V0's build path)."""

from typing import Annotated

from fastapi import APIRouter, Query

from kubehands.api.routes.deps import CallerDep, GatewayDep
from kubehands.api.schemas import ImageExists, RegistryPrefix
from kubehands.spec.errors import InvalidRequest
from kubehands.spec.request import is_valid_image

router = APIRouter(tags=["images"])


@router.get("/registry_prefix", response_model=RegistryPrefix, responses={401: {}})
async def registry_prefix(caller: CallerDep, gateway: GatewayDep) -> RegistryPrefix:
    return RegistryPrefix(registry_prefix=gateway.settings.registry_prefix)


@router.get("/image_exists", response_model=ImageExists, responses={401: {}, 422: {}})
async def image_exists(
    image: Annotated[str, Query(min_length=1, max_length=512)], caller: CallerDep, gateway: GatewayDep
) -> ImageExists:
    if not is_valid_image(image):
        raise InvalidRequest("invalid image reference")
    return await gateway.images.lookup(image)
