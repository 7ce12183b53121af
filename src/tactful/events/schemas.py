"""Shapes of the ingestion API: Segment-spec calls and first-class purchases."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

MAX_CALL_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
# Purchase limits, shared by the HTTP API and file imports.
MAX_ID = 200
MAX_RECEIPT_ID = 100
MAX_CODE = 64  # store, product and category ids, card numbers, phones
MAX_EMAIL = 320
MAX_LINES = 1000
MAX_LINE_NO = 100_000
MAX_QUANTITY = 1_000_000
MAX_MONEY = 10**12
DEFAULT_CURRENCY = "RUB"

IdText = Annotated[str, Field(min_length=1, max_length=MAX_ID)]


def _id_text(value: Any) -> Any:
    # Segment libraries send ids as strings, but numbers are common in hand-written calls.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


class SegmentCall(BaseModel):
    """Fields common to every Segment-spec call."""

    model_config = ConfigDict(extra="ignore")

    messageId: str | None = Field(default=None, max_length=MAX_ID)  # noqa: N815 - Segment spec
    userId: IdText | None = None  # noqa: N815
    anonymousId: IdText | None = None  # noqa: N815
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None  # noqa: N815
    sentAt: datetime | None = None  # noqa: N815
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)

    _ids = field_validator("userId", "anonymousId", mode="before")(_id_text)

    @model_validator(mode="after")
    def _someone(self) -> SegmentCall:
        if self.userId is None and self.anonymousId is None and not isinstance(self, AliasCall):
            raise ValueError("either userId or anonymousId is required")
        return self


class IdentifyCall(SegmentCall):
    type: Literal["identify"] = "identify"
    traits: dict[str, Any] = Field(default_factory=dict)


class TrackCall(SegmentCall):
    type: Literal["track"] = "track"
    event: str = Field(min_length=1, max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict)


class PageCall(SegmentCall):
    type: Literal["page"] = "page"
    name: str | None = Field(default=None, max_length=200)
    category: str | None = Field(default=None, max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict)


class ScreenCall(SegmentCall):
    type: Literal["screen"] = "screen"
    name: str | None = Field(default=None, max_length=200)
    category: str | None = Field(default=None, max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict)


class AliasCall(SegmentCall):
    type: Literal["alias"] = "alias"
    previousId: IdText  # noqa: N815
    userId: IdText  # noqa: N815 - required for alias

    _previous = field_validator("previousId", mode="before")(_id_text)


class GroupCall(SegmentCall):
    type: Literal["group"] = "group"
    groupId: IdText  # noqa: N815
    traits: dict[str, Any] = Field(default_factory=dict)


AnyCall = Annotated[
    IdentifyCall | TrackCall | PageCall | ScreenCall | AliasCall | GroupCall,
    Field(discriminator="type"),
]
CALL_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyCall)
CALL_MODELS: dict[str, type[SegmentCall]] = {
    "identify": IdentifyCall,
    "track": TrackCall,
    "page": PageCall,
    "screen": ScreenCall,
    "alias": AliasCall,
    "group": GroupCall,
}


class BatchEnvelope(BaseModel):
    """``POST /v1/batch``: up to 500 KB of calls; each call gets its own result."""

    model_config = ConfigDict(extra="ignore")

    batch: list[Any] = Field(min_length=1, max_length=10_000)
    sentAt: datetime | None = None  # noqa: N815
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)


# -- purchases --------------------------------------------------------------------------------


class PurchaseCustomer(BaseModel):
    """Who bought: any identities the till or shop knows."""

    model_config = ConfigDict(extra="forbid")

    user_id: IdText | None = Field(default=None, description="the shop's or CRM's customer id")
    namespace: str = Field(
        default="user_id", max_length=50, description="the id system user_id belongs to"
    )
    card: str | None = Field(default=None, max_length=MAX_CODE, description="loyalty card number")
    phone: str | None = Field(default=None, max_length=MAX_CODE)
    email: str | None = Field(default=None, max_length=MAX_EMAIL)
    anonymous_id: IdText | None = None
    device_id: IdText | None = None

    _ids = field_validator("user_id", mode="before")(_id_text)


class PurchaseLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line_no: int | None = Field(default=None, ge=1, le=MAX_LINE_NO)
    product_id: str = Field(min_length=1, max_length=MAX_CODE)
    category_id: str | None = Field(default=None, max_length=MAX_CODE)
    category: str | None = Field(default=None, max_length=300)
    quantity: float = Field(
        gt=0, le=MAX_QUANTITY, description="units, or kg/m for goods by measure"
    )
    unit_price: int = Field(ge=0, le=MAX_MONEY, description="price per unit in minor units")
    discount: int = Field(default=0, ge=0, le=MAX_MONEY, description="line discount, minor units")
    amount: int | None = Field(
        default=None,
        ge=0,
        description="paid for the line; round(quantity × unit_price) − discount when omitted",
    )

    @model_validator(mode="after")
    def _amounts(self) -> PurchaseLine:
        gross = round(self.quantity * self.unit_price)
        if self.discount > gross:
            raise ValueError(f"discount {self.discount} exceeds quantity × unit_price ({gross})")
        expected = gross - self.discount
        if self.amount is not None and self.amount != expected:
            raise ValueError(
                f"amount {self.amount} differs from quantity × unit_price − discount ({expected})"
            )
        self.amount = expected
        return self


class Purchase(BaseModel):
    """A receipt (sale or return) with its lines."""

    model_config = ConfigDict(extra="forbid")

    receipt_id: str = Field(min_length=1, max_length=MAX_RECEIPT_ID)
    kind: Literal["sale", "return"] = "sale"
    original_receipt_id: str | None = Field(default=None, min_length=1, max_length=MAX_RECEIPT_ID)
    customer: PurchaseCustomer | None = None
    store_id: str = Field(min_length=1, max_length=MAX_CODE)
    channel: Literal["offline", "online"] = "offline"
    occurred_at: datetime
    lines: list[PurchaseLine] = Field(min_length=1, max_length=MAX_LINES)
    total: int | None = Field(default=None, ge=0, description="sum of line amounts; checked")
    bonus_accrued: int = Field(default=0, ge=0, le=MAX_MONEY)
    bonus_spent: int = Field(default=0, ge=0, le=MAX_MONEY)
    currency: str = Field(default=DEFAULT_CURRENCY, min_length=3, max_length=3)
    message_id: str | None = Field(
        default=None, max_length=200, description="defaults to the receipt id"
    )
    properties: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Purchase:
        if self.kind == "return" and not self.original_receipt_id:
            raise ValueError("a return names original_receipt_id, the sale it returns")
        if self.kind == "sale" and self.original_receipt_id:
            raise ValueError("only a return names original_receipt_id")
        numbers = [line.line_no for line in self.lines if line.line_no is not None]
        if len(numbers) != len(set(numbers)):
            raise ValueError("line_no values repeat")
        total = sum(line.amount or 0 for line in self.lines)
        if self.total is not None and self.total != total:
            raise ValueError(f"total {self.total} differs from the sum of line amounts ({total})")
        self.total = total
        if self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at needs a time zone offset (e.g. 2026-05-01T10:00:00Z)")
        return self


PURCHASE_ADAPTER: TypeAdapter[Purchase] = TypeAdapter(Purchase)


class PurchaseBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purchases: list[dict[str, Any]] = Field(min_length=1, max_length=5000)


# The answer to a batch is built for every call of every batch, so it is made of plain
# dataclasses (serialised by orjson directly) rather than validated models.


@dataclass(slots=True)
class ItemError:
    field: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


@dataclass(slots=True)
class ItemResult:
    """What happened to one call of a batch."""

    index: int
    message_id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    errors: list[ItemError] = dataclass_field(default_factory=list)


@dataclass(slots=True)
class IngestResponse:
    accepted: int
    duplicates: int
    rejected: int
    results: list[ItemResult]
    success: bool = True


# -- file imports -----------------------------------------------------------------------------


class ImportOut(BaseModel):
    """An import of a file and what happened to its rows."""

    id: int
    kind: str = Field(description="customers, purchases, events, stores or products")
    file_name: str = Field(description="the uploaded file's name")
    status: Literal["queued", "running", "done", "failed"]
    rows_total: int = Field(description="data rows in the file (the header not counted)")
    rows_imported: int = Field(description="rows that created or changed something")
    rows_duplicate: int = Field(description="rows already imported (nothing changed)")
    rows_rejected: int = Field(description="rows listed in the error file with their reason")
    error: str | None = Field(description="why the whole import stopped, if it did")
    errors_url: str | None = Field(description="the rejected rows as CSV: line, field, reason")
    options: dict[str, Any]
    actor: str
    started_at: datetime
    finished_at: datetime | None
