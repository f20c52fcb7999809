"""What every settings model shares: the strict base model and the validators used in several sections."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic_core import PydanticCustomError

from domain import images
from domain.images import ImageRef
from domain.settings.errors import field_error, value_error
from domain.settings.patterns import DNS_LABEL, NAME_MAX_LENGTH

ConsolidationPolicy = Literal["WhenEmpty", "WhenEmptyOrUnderutilized"]
# `reserved`: EC2 On-Demand Capacity Reservations and Capacity Blocks, selected by
# the pool's `capacityReservations` (Karpenter's ReservedCapacity, beta since v1.6).
CapacityType = Literal["spot", "on-demand", "reserved"]
LogType = Literal["api", "audit", "authenticator", "controllerManager", "scheduler"]


class ConfigModel(BaseModel):
    """Frozen, strict, and no key it does not know (a misspelt key is an error, never ignored)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=False)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]):
        """Validate config-shaped data (JSON types: lists, not tuples) as strictly as a stack file."""
        return cls.model_validate_json(json.dumps(dict(raw)))


def _image_ref(value: str) -> str:
    """A container image pinned by tag (not `latest`) or digest."""
    if not (ImageRef.is_valid(value) and ImageRef.parse(value).pinned):
        raise value_error(
            "image",
            f"must be an image pinned by a tag other than latest or by digest, such as {images.EXAMPLE} (got {{got}})",
            value,
        )
    return value


PinnedImage = Annotated[str, AfterValidator(_image_ref)]


def unique(value: tuple[str, ...]) -> tuple[str, ...]:
    """A list that names each item once."""
    dupes = sorted({v for v in value if value.count(v) > 1})
    if dupes:
        raise value_error("duplicates", "must not repeat {got}", dupes)
    return value


def name_problems(names: Iterable[str], noun: str) -> list[PydanticCustomError]:
    """The keys of a map of named things (pools, services, jobs) that are not lowercase
    DNS labels of at most `NAME_MAX_LENGTH` characters: each names Kubernetes objects."""
    return [
        field_error(
            name,
            f"is not a valid {noun}: use a lowercase DNS label (a-z, 0-9, '-', at most {NAME_MAX_LENGTH} characters)",
            name,
        )
        for name in names
        if not re.match(DNS_LABEL, name) or len(name) > NAME_MAX_LENGTH
    ]
